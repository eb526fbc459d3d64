// Malformed and hostile GenerateRequests at the router's door: each one is rejected with the
// right code and a message naming the field. One table row per request.
#include "router/request_validation.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem::router {
namespace {

using ::testing::HasSubstr;

const ModelContext& Model() {
  static const ModelContext* model = [] {
    auto loaded = ModelContext::Load(testing::FixturePath("models/llama3-tiny"), 16);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *model;
}

// A valid request: 3 prompt ids, greedy, 4 tokens. Rows mutate it.
v1::GenerateRequest Valid() {
  v1::GenerateRequest r;
  r.set_request_id("ok-1");
  r.mutable_token_ids()->add_ids(0);
  r.mutable_token_ids()->add_ids(663);
  r.mutable_token_ids()->add_ids(72);
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_max_tokens(4);
  return r;
}

struct Row {
  const char* name;
  std::function<void(v1::GenerateRequest&)> mutate;
  const char* field;  // substring the message must contain
};

const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

std::vector<Row> Rows() {
  using R = v1::GenerateRequest;
  auto s = [](R& r) { return r.mutable_sampling(); };
  return {
      {"no_prompt", [](R& r) { r.clear_prompt(); }, "prompt"},
      {"empty_text", [](R& r) { r.set_text(""); }, "text"},
      {"empty_ids", [](R& r) { r.mutable_token_ids()->clear_ids(); }, "token_ids.ids"},
      {"negative_id", [](R& r) { r.mutable_token_ids()->add_ids(-1); }, "token_ids.ids[3]"},
      {"id_at_vocab", [](R& r) { r.mutable_token_ids()->add_ids(1024); }, "token_ids.ids[3]"},
      {"huge_id", [](R& r) { r.mutable_token_ids()->set_ids(0, 1 << 30); }, "token_ids.ids[0]"},
      {"invalid_utf8", [](R& r) { r.set_text("abc\xff\xfe"); }, "text"},
      {"truncated_utf8", [](R& r) { r.set_text("caf\xc3"); }, "text"},
      {"overlong_utf8", [](R& r) { r.set_text("\xc0\xaf"); }, "text"},
      {"surrogate_utf8", [](R& r) { r.set_text("\xed\xa0\x80"); }, "text"},
      {"prompt_over_context",
       [](R& r) {
         for (int i = 0; i < 1100; ++i) r.mutable_token_ids()->add_ids(5);
       },
       "prompt"},
      {"prompt_fills_context",
       [](R& r) {
         r.mutable_token_ids()->clear_ids();
         for (int i = 0; i < 1024; ++i) r.mutable_token_ids()->add_ids(5);
       },
       "prompt"},
      {"max_tokens_past_context", [&](R& r) { s(r)->set_max_tokens(1022); }, "sampling.max_tokens"},
      {"huge_max_tokens", [&](R& r) { s(r)->set_max_tokens(1 << 30); }, "sampling.max_tokens"},
      {"zero_max_tokens", [&](R& r) { s(r)->set_max_tokens(0); }, "sampling.max_tokens"},
      {"negative_max_tokens", [&](R& r) { s(r)->set_max_tokens(-5); }, "sampling.max_tokens"},
      {"negative_temperature", [&](R& r) { s(r)->set_temperature(-0.1f); }, "sampling.temperature"},
      {"nan_temperature", [&](R& r) { s(r)->set_temperature(kNan); }, "sampling.temperature"},
      {"inf_temperature", [&](R& r) { s(r)->set_temperature(kInf); }, "sampling.temperature"},
      {"negative_top_k", [&](R& r) { s(r)->set_top_k(-1); }, "sampling.top_k"},
      {"zero_top_p", [&](R& r) { s(r)->set_top_p(0.0f); }, "sampling.top_p"},
      {"big_top_p", [&](R& r) { s(r)->set_top_p(1.5f); }, "sampling.top_p"},
      {"nan_top_p", [&](R& r) { s(r)->set_top_p(kNan); }, "sampling.top_p"},
      {"negative_min_p", [&](R& r) { s(r)->set_min_p(-0.1f); }, "sampling.min_p"},
      {"big_min_p", [&](R& r) { s(r)->set_min_p(1.1f); }, "sampling.min_p"},
      {"zero_repetition_penalty", [&](R& r) { s(r)->set_repetition_penalty(0.0f); },
       "sampling.repetition_penalty"},
      {"inf_repetition_penalty", [&](R& r) { s(r)->set_repetition_penalty(kInf); },
       "sampling.repetition_penalty"},
      {"presence_penalty_low", [&](R& r) { s(r)->set_presence_penalty(-2.5f); },
       "sampling.presence_penalty"},
      {"presence_penalty_high", [&](R& r) { s(r)->set_presence_penalty(3.0f); },
       "sampling.presence_penalty"},
      {"frequency_penalty_high", [&](R& r) { s(r)->set_frequency_penalty(2.01f); },
       "sampling.frequency_penalty"},
      {"frequency_penalty_nan", [&](R& r) { s(r)->set_frequency_penalty(kNan); },
       "sampling.frequency_penalty"},
      {"negative_ngram", [&](R& r) { s(r)->set_no_repeat_ngram_size(-1); },
       "sampling.no_repeat_ngram_size"},
      {"huge_ngram", [&](R& r) { s(r)->set_no_repeat_ngram_size(1000); },
       "sampling.no_repeat_ngram_size"},
      {"logit_bias_big", [&](R& r) { (*s(r)->mutable_logit_bias())[5] = 101.0f; },
       "sampling.logit_bias"},
      {"logit_bias_bad_id", [&](R& r) { (*s(r)->mutable_logit_bias())[5000] = 1.0f; },
       "sampling.logit_bias"},
      {"logit_bias_too_many",
       [&](R& r) {
         for (int i = 0; i < 1025; ++i) (*s(r)->mutable_logit_bias())[i - 1] = 1.0f;
       },
       "sampling.logit_bias"},
      {"bad_token_id_out_of_vocab", [&](R& r) { s(r)->add_bad_token_ids(99999); },
       "sampling.bad_token_ids"},
      {"allowed_token_id_negative", [&](R& r) { s(r)->add_allowed_token_ids(-3); },
       "sampling.allowed_token_ids"},
      {"min_tokens_negative", [&](R& r) { s(r)->set_min_tokens(-1); }, "sampling.min_tokens"},
      {"min_tokens_over_max", [&](R& r) { s(r)->set_min_tokens(5); }, "sampling.min_tokens"},
      {"too_many_stops",
       [&](R& r) {
         for (int i = 0; i < 17; ++i) s(r)->add_stop("x" + std::to_string(i));
       },
       "sampling.stop"},
      {"stop_too_long", [&](R& r) { s(r)->add_stop(std::string(300, 'a')); }, "sampling.stop"},
      {"empty_stop", [&](R& r) { s(r)->add_stop(""); }, "sampling.stop"},
      {"stop_token_out_of_vocab", [&](R& r) { s(r)->add_stop_token_ids(4096); },
       "sampling.stop_token_ids"},
      {"logprobs_negative", [&](R& r) { s(r)->set_logprobs(-1); }, "sampling.logprobs"},
      {"logprobs_big", [&](R& r) { s(r)->set_logprobs(21); }, "sampling.logprobs"},
      {"n_zero", [&](R& r) { s(r)->set_n(0); }, "sampling.n"},
      {"n_big", [&](R& r) { s(r)->set_n(17); }, "sampling.n"},
      {"n_greedy", [&](R& r) { s(r)->set_n(2); }, "sampling.n"},
      {"beams_zero", [&](R& r) { s(r)->set_num_beams(0); }, "sampling.num_beams"},
      {"beams_big", [&](R& r) { s(r)->set_num_beams(17); }, "sampling.num_beams"},
      {"beams_with_temperature",
       [&](R& r) {
         s(r)->set_num_beams(2);
         s(r)->set_temperature(0.7f);
       },
       "sampling.num_beams"},
      {"return_sequences_over_beams",
       [&](R& r) {
         s(r)->set_num_beams(2);
         s(r)->set_num_return_sequences(3);
       },
       "sampling.num_return_sequences"},
      {"length_penalty_nan", [&](R& r) { s(r)->set_length_penalty(kNan); },
       "sampling.length_penalty"},
      {"request_id_too_long", [](R& r) { r.set_request_id(std::string(129, 'a')); }, "request_id"},
      {"request_id_space", [](R& r) { r.set_request_id("has space"); }, "request_id"},
      {"request_id_slash", [](R& r) { r.set_request_id("a/b"); }, "request_id"},
      {"request_id_newline", [](R& r) { r.set_request_id("a\nlog=forged"); }, "request_id"},
      {"request_id_nul", [](R& r) { r.set_request_id(std::string("a\0b", 3)); }, "request_id"},
      {"request_id_utf8", [](R& r) { r.set_request_id("caf\xc3\xa9"); }, "request_id"},
  };
}

class ValidationTableTest : public ::testing::TestWithParam<Row> {};

TEST_P(ValidationTableTest, RejectedNamingTheField) {
  v1::GenerateRequest request = Valid();
  GetParam().mutate(request);
  absl::StatusOr<PreparedRequest> prepared = PrepareRequest(request, Model(), "req-1", 7);
  ASSERT_FALSE(prepared.ok()) << GetParam().name;
  EXPECT_EQ(prepared.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(prepared.status().message()), HasSubstr(GetParam().field));
}

INSTANTIATE_TEST_SUITE_P(Hostile, ValidationTableTest, ::testing::ValuesIn(Rows()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(ValidationTableTest, HasAtLeastFortyRows) { EXPECT_GE(Rows().size(), 40u); }

TEST(PrepareRequestTest, ValidRequestKeepsIdsAndResolvesSeed) {
  absl::StatusOr<PreparedRequest> p = PrepareRequest(Valid(), Model(), "req-9", 1234);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->request_id, "ok-1");
  EXPECT_EQ(p->prompt_ids, (std::vector<int32_t>{0, 663, 72}));
  EXPECT_EQ(p->seed(), 1234u);
  EXPECT_TRUE(p->skip_special_tokens);
  EXPECT_EQ(p->num_outputs(), 1);
}

TEST(PrepareRequestTest, ClientSeedWinsAndEmptyIdIsAssigned) {
  v1::GenerateRequest r = Valid();
  r.clear_request_id();
  r.mutable_sampling()->set_seed(42);
  absl::StatusOr<PreparedRequest> p = PrepareRequest(r, Model(), "req-9", 1234);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->request_id, "req-9");
  EXPECT_EQ(p->seed(), 42u);
}

TEST(PrepareRequestTest, TextIsTokenizedLikeTheFixture) {
  v1::GenerateRequest r = Valid();
  r.set_text("Licensed under the Apache License");
  absl::StatusOr<PreparedRequest> p = PrepareRequest(r, Model(), "x", 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->prompt_ids, (std::vector<int32_t>{0, 663, 72, 376, 272, 390, 84, 551, 73, 325}));
  r.set_add_special_tokens(false);
  p = PrepareRequest(r, Model(), "x", 1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->prompt_ids.front(), 663);
}

TEST(PrepareRequestTest, MaxTokensExactlyFillingTheContextIsAccepted) {
  v1::GenerateRequest r = Valid();
  r.mutable_sampling()->set_max_tokens(1024 - 3);
  EXPECT_TRUE(PrepareRequest(r, Model(), "x", 1).ok());
}

TEST(FullBlockHashesTest, ChainsFullBlocksOnly) {
  std::vector<int32_t> tokens(40, 7);
  std::vector<uint64_t> hashes = FullBlockHashes(tokens, 16);
  ASSERT_EQ(hashes.size(), 2u);
  EXPECT_NE(hashes[0], hashes[1]);  // same tokens, different parents
  std::vector<int32_t> other = tokens;
  other[0] = 8;
  EXPECT_NE(FullBlockHashes(other, 16)[1], hashes[1]);  // block 1 depends on block 0
}

}  // namespace
}  // namespace tandem::router
