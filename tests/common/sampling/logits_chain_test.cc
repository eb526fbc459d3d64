// The logits processors and warpers: Hugging Face fixtures and per-stage behaviour.
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/model/safetensors.h"
#include "common/sampling/logits_processors.h"
#include "common/sampling/logits_warpers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::testing::ElementsAre;

std::vector<float> Floats(const SafetensorsFile& file, const std::string& name) {
  const TensorView& t = file.tensors().at(name);
  std::vector<float> v(static_cast<size_t>(t.NumElements()));
  ConvertToFloat(t, v);
  return v;
}

// Params for one fixture case's stages (temperature stays 1 unless a stage sets it).
SamplingParams ParamsForStages(const nlohmann::json& stages) {
  SamplingParams p;
  for (const auto& s : stages) {
    std::string stage = s["stage"];
    double value = s["value"];
    if (stage == "repetition_penalty") p.repetition_penalty = static_cast<float>(value);
    if (stage == "no_repeat_ngram_size") p.no_repeat_ngram_size = static_cast<int32_t>(value);
    if (stage == "temperature") p.temperature = static_cast<float>(value);
    if (stage == "top_k") p.top_k = static_cast<int32_t>(value);
    if (stage == "top_p") p.top_p = static_cast<float>(value);
    if (stage == "min_p") p.min_p = static_cast<float>(value);
  }
  EXPECT_TRUE(p.Validate(256).ok());
  return p;
}

TEST(LogitsChainTest, MatchesHuggingFaceProcessorsOnRecordedLogits) {
  nlohmann::json cases = testing::ReadJsonFixture("sampling/processors.json")["cases"];
  auto file = SafetensorsFile::Open(testing::FixturePath("sampling/processors.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView& ids = (*file)->tensors().at("input_ids");
  ASSERT_EQ(ids.dtype, DType::kI32);
  ASSERT_THAT((*file)->tensors().at("logits").shape, ElementsAre(6, 256));
  const int64_t rows = 6, vocab = 256, length = ids.shape[1];
  std::vector<int32_t> input_ids(static_cast<size_t>(ids.NumElements()));
  std::memcpy(input_ids.data(), ids.data.data(), ids.data.size());
  ASSERT_EQ(cases.size(), 14u);
  for (auto& [name, stages] : cases.items()) {
    SCOPED_TRACE(name);
    SamplingParams params = ParamsForStages(stages);
    std::vector<SequenceSamplingState> states;  // HF's input_ids = prompt + output
    for (int64_t r = 0; r < rows; ++r) {
      states.push_back(
          MakeSequenceState(std::span(input_ids).subspan(r * length, length), /*seed=*/0));
    }
    std::vector<SamplingRow> batch;
    for (const auto& s : states) batch.push_back({&params, &s});
    std::vector<float> logits = Floats(**file, "logits");
    SamplingContext ctx{.vocab_size = vocab};
    ApplyLogitsProcessors(logits, ctx, batch);
    ApplyLogitsWarpers(logits, ctx, batch);
    std::vector<float> expected = Floats(**file, name);
    int num_filtered = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      if (std::isinf(expected[i])) {
        ++num_filtered;
        EXPECT_EQ(logits[i], expected[i]) << "row " << i / vocab << " token " << i % vocab;
      } else {
        EXPECT_NEAR(logits[i], expected[i], 1e-6f * std::max(1.0f, std::abs(expected[i])))
            << "row " << i / vocab << " token " << i % vocab;
      }
    }
    bool filters = name.find("temperature") == std::string::npos &&
                   name.find("repetition") == std::string::npos;
    EXPECT_EQ(num_filtered > 0, filters);  // the case exercised its stage
  }
}

// A row whose params use no stage comes out bit-identical (even NaN payloads survive).
TEST(LogitsChainTest, RowsThatUseNoStageAreUntouched) {
  SamplingParams plain, hot;
  hot.temperature = 0.5f;
  hot.top_k = 2;
  hot.repetition_penalty = 2.0f;
  hot.logit_bias = {{0, 5.0f}};
  std::vector<int32_t> prompt = {1, 2, 3};
  SequenceSamplingState s = MakeSequenceState(prompt, 1);
  std::vector<float> logits = {NAN, 1.0f, -2.0f, 3.0f, 0.5f, 2.0f, -1.0f, 4.0f};
  std::vector<SamplingRow> rows = {{&plain, &s}, {&hot, &s}};
  SamplingContext ctx{.vocab_size = 4};
  ApplyLogitsProcessors(logits, ctx, rows);
  ApplyLogitsWarpers(logits, ctx, rows);
  EXPECT_TRUE(std::isnan(logits[0]));
  EXPECT_THAT(std::vector<float>(logits.begin() + 1, logits.begin() + 4),
              ElementsAre(1.0f, -2.0f, 3.0f));
  // row 1: bias on 0 -> 5.5; penalty on 1, 2, 3; / 0.5; top-2 keeps 11 and 4.
  EXPECT_THAT(std::vector<float>(logits.begin() + 4, logits.end()),
              ElementsAre(11.0f, -INFINITY, -INFINITY, 4.0f));
}

TEST(LogitsChainTest, AllowedThenBiasThenBadIds) {
  SamplingParams p;
  p.allowed_token_ids = {1, 2, 3};
  p.logit_bias = {{2, 10.0f}, {0, 50.0f}};
  p.bad_token_ids = {3};
  SequenceSamplingState s;
  std::vector<float> logits = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
  SamplingRow row{&p, &s};
  ApplyBiasAndBans(logits, {.vocab_size = 5}, std::span(&row, 1));
  // 0 is not allowed (its bias lifts -inf to -inf), 2 is biased, 3 is banned.
  EXPECT_THAT(logits, ElementsAre(-INFINITY, 2.0f, 13.0f, -INFINITY, -INFINITY));
}

TEST(LogitsChainTest, MinTokensBansEosAndStopIdsUntilReached) {
  SamplingParams p;
  p.min_tokens = 2;
  p.stop_token_ids = {1};
  std::vector<int32_t> eos = {3};
  SamplingContext ctx{.vocab_size = 4, .eos_token_ids = eos};
  SequenceSamplingState s = MakeSequenceState(std::vector<int32_t>{0}, 1);
  AppendToken(s, 2);  // one output token: still below min_tokens
  SamplingRow row{&p, &s};
  std::vector<float> logits(4, 1.0f);
  ApplyMinTokens(logits, ctx, std::span(&row, 1));
  EXPECT_THAT(logits, ElementsAre(1.0f, -INFINITY, 1.0f, -INFINITY));
  p.ignore_eos = true;
  logits.assign(4, 1.0f);
  ApplyMinTokens(logits, ctx, std::span(&row, 1));
  EXPECT_THAT(logits, ElementsAre(1.0f, -INFINITY, 1.0f, 1.0f));
  AppendToken(s, 2);  // min_tokens reached
  logits.assign(4, 1.0f);
  ApplyMinTokens(logits, ctx, std::span(&row, 1));
  EXPECT_THAT(logits, ElementsAre(1.0f, 1.0f, 1.0f, 1.0f));
}

TEST(LogitsChainTest, PresenceAndFrequencyPenalizeOutputTokensOnly) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  SequenceSamplingState s = MakeSequenceState(std::vector<int32_t>{0, 0, 0}, 1);
  for (int32_t t : {1, 2, 2, 2}) AppendToken(s, t);
  SamplingRow row{&p, &s};
  std::vector<float> logits(4, 1.0f);
  ApplyPenalties(logits, {.vocab_size = 4}, std::span(&row, 1));
  // token 0 only in the prompt; 1 once: 1 - 0.25 - 0.5; 2 three times: 1 - 0.75 - 0.5.
  EXPECT_THAT(logits, ElementsAre(1.0f, 0.25f, -0.25f, 1.0f));
}

TEST(LogitsChainTest, RepetitionPenaltyCountsEachTokenOnceOverPromptAndOutput) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  SequenceSamplingState s = MakeSequenceState(std::vector<int32_t>{0, 0, 1}, 1);
  for (int32_t t : {1, 2, 2}) AppendToken(s, t);
  SamplingRow row{&p, &s};
  std::vector<float> logits = {4.0f, -4.0f, 4.0f, 4.0f};
  ApplyPenalties(logits, {.vocab_size = 4}, std::span(&row, 1));
  EXPECT_THAT(logits, ElementsAre(2.0f, -8.0f, 2.0f, 4.0f));
}

TEST(LogitsChainTest, NoRepeatNgramSpansPromptAndOutput) {
  SamplingParams p;
  p.no_repeat_ngram_size = 3;
  // prompt 5 6 7 | output 1 5 6: the 2-gram "5 6" was followed by 7 -> 7 is banned.
  SequenceSamplingState s = MakeSequenceState(std::vector<int32_t>{5, 6, 7}, 1);
  for (int32_t t : {1, 5, 6}) AppendToken(s, t);
  SamplingRow row{&p, &s};
  std::vector<float> logits(8, 0.0f);
  ApplyNoRepeatNgram(logits, {.vocab_size = 8}, std::span(&row, 1));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(std::isinf(logits[i]), i == 7) << i;
}

}  // namespace
}  // namespace tandem
