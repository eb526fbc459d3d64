#include "common/sampling/sampling_params.h"

#include <cmath>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kVocab = 100;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// The message of Validate() after `edit` is applied to default params.
template <typename Edit>
std::string ErrorOf(Edit edit) {
  SamplingParams p;
  edit(p);
  absl::Status status = p.Validate(kVocab);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  return std::string(status.message());
}

TEST(SamplingParamsTest, DefaultsAndFullyLoadedParamsAreValid) {
  EXPECT_TRUE(SamplingParams{}.Validate(kVocab).ok());
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_k = 40;
  p.top_p = 0.9f;
  p.min_p = 0.05f;
  p.repetition_penalty = 1.2f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.no_repeat_ngram_size = 3;
  p.logit_bias = {{0, -100.0f}, {99, 100.0f}};
  p.bad_token_ids = {5};
  p.allowed_token_ids = {1, 2, 3};
  p.min_tokens = 4;
  p.max_tokens = 4;
  p.stop = {"\n\n", std::string(kMaxStopStringBytes, 'x')};
  p.stop_token_ids = {7};
  p.logprobs = kMaxLogprobs;
  p.n = kMaxN;
  EXPECT_TRUE(p.Validate(kVocab).ok()) << p.Validate(kVocab);
  SamplingParams beams;
  beams.temperature = 0.0f;
  beams.num_beams = 4;
  beams.num_return_sequences = 4;
  beams.length_penalty = -0.5f;
  EXPECT_TRUE(beams.Validate(kVocab).ok());
}

TEST(SamplingParamsTest, FloatFieldsNameTheFieldAndRange) {
  EXPECT_EQ(ErrorOf([](auto& p) { p.top_p = 1.5f; }), "top_p must be in (0, 1], got 1.5");
  EXPECT_THAT(ErrorOf([](auto& p) { p.top_p = 0.0f; }), HasSubstr("top_p must be in (0, 1]"));
  EXPECT_EQ(ErrorOf([](auto& p) { p.temperature = -0.5f; }),
            "temperature must be a finite number >= 0 (0: greedy), got -0.5");
  EXPECT_THAT(ErrorOf([](auto& p) { p.temperature = INFINITY; }), HasSubstr("temperature"));
  EXPECT_EQ(ErrorOf([](auto& p) { p.min_p = 1.5f; }), "min_p must be in [0, 1], got 1.5");
  EXPECT_THAT(ErrorOf([](auto& p) { p.min_p = -0.1f; }), HasSubstr("min_p must be in [0, 1]"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.repetition_penalty = 0.0f; }),
              HasSubstr("repetition_penalty must be a finite number > 0"));
  EXPECT_EQ(ErrorOf([](auto& p) { p.presence_penalty = 2.5f; }),
            "presence_penalty must be in [-2, 2], got 2.5");
  EXPECT_EQ(ErrorOf([](auto& p) { p.frequency_penalty = -3.0f; }),
            "frequency_penalty must be in [-2, 2], got -3");
}

TEST(SamplingParamsTest, NaNIsRejectedEverywhere) {
  EXPECT_THAT(ErrorOf([](auto& p) { p.temperature = kNaN; }), HasSubstr("temperature"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.top_p = kNaN; }), HasSubstr("top_p"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.min_p = kNaN; }), HasSubstr("min_p"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.repetition_penalty = kNaN; }),
              HasSubstr("repetition_penalty"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.presence_penalty = kNaN; }), HasSubstr("presence_penalty"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.frequency_penalty = kNaN; }), HasSubstr("frequency_penalty"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.length_penalty = kNaN; }), HasSubstr("length_penalty"));
  EXPECT_THAT(ErrorOf([](auto& p) {
                p.logit_bias = {{3, kNaN}};
              }),
              HasSubstr("logit_bias[3] must be in [-100, 100]"));
}

TEST(SamplingParamsTest, CountsNameTheFieldAndRange) {
  EXPECT_EQ(ErrorOf([](auto& p) { p.top_k = -1; }), "top_k must be >= 0 (0: off), got -1");
  EXPECT_EQ(ErrorOf([](auto& p) { p.max_tokens = 0; }), "max_tokens must be >= 1, got 0");
  EXPECT_EQ(ErrorOf([](auto& p) { p.min_tokens = 17; }),
            "min_tokens must be in [0, max_tokens = 16], got 17");
  EXPECT_THAT(ErrorOf([](auto& p) { p.no_repeat_ngram_size = -1; }),
              HasSubstr("no_repeat_ngram_size must be in [0, 64]"));
  EXPECT_EQ(ErrorOf([](auto& p) { p.logprobs = 21; }), "logprobs must be in [0, 20], got 21");
  EXPECT_THAT(ErrorOf([](auto& p) { p.logprobs = -1; }), HasSubstr("logprobs"));
  EXPECT_EQ(ErrorOf([](auto& p) { p.n = 0; }), "n must be in [1, 16], got 0");
  EXPECT_EQ(ErrorOf([](auto& p) { p.n = 17; }), "n must be in [1, 16], got 17");
  EXPECT_EQ(ErrorOf([](auto& p) { p.num_beams = 17; }), "num_beams must be in [1, 16], got 17");
  EXPECT_EQ(ErrorOf([](auto& p) { p.num_return_sequences = 2; }),
            "num_return_sequences must be in [1, num_beams = 1], got 2");
}

TEST(SamplingParamsTest, ContradictoryModesAreRejected) {
  EXPECT_THAT(ErrorOf([](auto& p) { p.num_beams = 4; }),
              HasSubstr("num_beams > 1 needs temperature = 0"));
  EXPECT_THAT(ErrorOf([](auto& p) {
                p.temperature = 0.0f;
                p.num_beams = 4;
                p.n = 2;
              }),
              HasSubstr("n must be 1 with beam search"));
  EXPECT_THAT(ErrorOf([](auto& p) {
                p.temperature = 0.0f;
                p.n = 3;
              }),
              HasSubstr("n > 1 needs temperature > 0"));
}

TEST(SamplingParamsTest, TokenIdsMustLieInTheVocab) {
  EXPECT_EQ(ErrorOf([](auto& p) {
              p.logit_bias = {{100, 1.0f}};
            }),
            "logit_bias entries must be in [0, 100), got 100");
  EXPECT_EQ(ErrorOf([](auto& p) {
              p.logit_bias = {{1, 150.0f}};
            }),
            "logit_bias[1] must be in [-100, 100], got 150");
  EXPECT_EQ(ErrorOf([](auto& p) { p.stop_token_ids = {-1}; }),
            "stop_token_ids entries must be in [0, 100), got -1");
  EXPECT_THAT(ErrorOf([](auto& p) {
                p.bad_token_ids = {1, 200};
              }),
              HasSubstr("bad_token_ids entries must be in [0, 100), got 200"));
  EXPECT_THAT(ErrorOf([](auto& p) { p.allowed_token_ids = {100}; }),
              HasSubstr("allowed_token_ids entries"));
}

TEST(SamplingParamsTest, OverLongListsAreRejectedWithTheCap) {
  EXPECT_EQ(ErrorOf([](auto& p) { p.stop.assign(kMaxStopStrings + 1, "x"); }),
            "stop must be at most 16 strings, got 17");
  EXPECT_EQ(ErrorOf([](auto& p) {
              p.stop = {"ok", std::string(kMaxStopStringBytes + 1, 'x')};
            }),
            "stop[1] length must be in [1, 256] bytes, got 257");
  EXPECT_THAT(ErrorOf([](auto& p) { p.stop = {""}; }), HasSubstr("stop[0] length"));
  EXPECT_EQ(ErrorOf([](auto& p) { p.stop_token_ids.assign(kMaxStopTokenIds + 1, 1); }),
            "stop_token_ids size must be at most 64, got 65");
  EXPECT_EQ(ErrorOf([](auto& p) {
              p.logit_bias.assign(kMaxLogitBiasEntries + 1, {1, 0.0f});
            }),
            "logit_bias size must be at most 1024, got 1025");
}

}  // namespace
}  // namespace tandem
