#include "common/api/api_convert.h"

#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(ApiConvertTest, UnsetFieldsTakeDefaultsAndRoundTrip) {
  v1::SamplingParams proto;
  auto params = SamplingParamsFromProto(proto, 100);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->temperature, 1.0f);
  EXPECT_EQ(params->max_tokens, 16);
  EXPECT_FALSE(params->seed.has_value());

  proto.set_temperature(0.0f);
  proto.set_num_beams(3);
  proto.set_num_return_sequences(2);
  proto.set_early_stopping(v1::EARLY_STOPPING_NEVER);
  proto.add_stop("\n\n");
  proto.set_seed(42);
  (*proto.mutable_logit_bias())[7] = -3.0f;
  params = SamplingParamsFromProto(proto, 100);
  ASSERT_TRUE(params.ok()) << params.status();
  v1::SamplingParams back;
  SamplingParamsToProto(*params, &back);
  auto again = SamplingParamsFromProto(back, 100);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->num_beams, 3);
  EXPECT_EQ(again->early_stopping, EarlyStopping::kNever);
  EXPECT_EQ(again->stop, std::vector<std::string>{"\n\n"});
  EXPECT_EQ(*again->seed, 42u);
  EXPECT_EQ(again->logit_bias, (std::vector<std::pair<int32_t, float>>{{7, -3.0f}}));
}

TEST(ApiConvertTest, InvalidFieldsAreNamed) {
  v1::SamplingParams proto;
  proto.set_top_p(1.5f);
  EXPECT_EQ(std::string(SamplingParamsFromProto(proto, 100).status().message()),
            "top_p must be in (0, 1], got 1.5");
  proto = {};
  proto.add_stop_token_ids(100);
  EXPECT_FALSE(SamplingParamsFromProto(proto, 100).ok());
}

}  // namespace
}  // namespace tandem
