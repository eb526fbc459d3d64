// Selection, seeds, logprobs and the batched entry point.
#include "common/sampling/sampler.h"

#include <cmath>
#include <map>
#include <vector>

#include "common/sampling/logits_processors.h"
#include "common/sampling/logits_warpers.h"
#include "common/sampling/selection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr int kDraws = 100000;

std::vector<float> TestLogits(int vocab, float scale) {
  std::vector<float> logits(vocab);
  for (int i = 0; i < vocab; ++i) logits[i] = scale * std::sin(1.7f * i + 0.3f);
  return logits;
}

// Runs the chain without selection: the distribution the draw samples from.
std::vector<float> Processed(std::vector<float> logits, const SamplingParams& p) {
  SequenceSamplingState s;
  SamplingRow row{&p, &s};
  SamplingContext ctx{.vocab_size = static_cast<int64_t>(logits.size())};
  ApplyLogitsProcessors(logits, ctx, std::span(&row, 1));
  ApplyLogitsWarpers(logits, ctx, std::span(&row, 1));
  return logits;
}

// Chi-square critical value at p = 0.001 for `dof` degrees of freedom (Wilson-Hilferty).
double ChiSquareCritical(int dof) {
  const double z = 3.0902;  // one-sided normal quantile at 0.999
  double k = dof, t = 1.0 - 2.0 / (9 * k) + z * std::sqrt(2.0 / (9 * k));
  return k * t * t * t;
}

// Draws kDraws tokens at positions 0.. with a fixed seed and checks the frequencies against
// softmax(processed): never a filtered token, chi-square below the 0.001 critical value.
void ExpectFrequenciesMatch(const std::vector<float>& logits, const SamplingParams& p,
                            int expected_kept) {
  std::vector<float> processed = Processed(logits, p);
  double max_logit = *std::max_element(processed.begin(), processed.end()), total = 0;
  for (float v : processed) total += std::exp(v - max_logit);
  std::vector<int> counts(logits.size());
  for (int i = 0; i < kDraws; ++i) {
    ++counts[DrawFromLogits(processed, UniformForPosition(2024, i))];
  }
  double chi2 = 0;
  int kept = 0;
  for (size_t t = 0; t < logits.size(); ++t) {
    if (std::isinf(processed[t])) {
      EXPECT_EQ(counts[t], 0) << "filtered token " << t << " was drawn";
      continue;
    }
    ++kept;
    double expected = kDraws * std::exp(processed[t] - max_logit) / total;
    chi2 += (counts[t] - expected) * (counts[t] - expected) / expected;
  }
  EXPECT_EQ(kept, expected_kept);
  EXPECT_LT(chi2, ChiSquareCritical(kept - 1)) << "kept " << kept;
}

TEST(SamplerStatsTest, PlainSamplingMatchesSoftmax) {
  SamplingParams p;
  p.temperature = 0.8f;
  ExpectFrequenciesMatch(TestLogits(12, 1.5f), p, 12);
}

TEST(SamplerStatsTest, TopKSamplingMatchesTheRenormalisedTopK) {
  SamplingParams p;
  p.top_k = 5;
  ExpectFrequenciesMatch(TestLogits(30, 2.0f), p, 5);
}

TEST(SamplerStatsTest, TopPSamplingMatchesTheRenormalisedNucleus) {
  SamplingParams p;
  p.top_p = 0.7f;
  p.temperature = 1.3f;
  std::vector<float> logits = TestLogits(30, 2.0f);
  std::vector<float> processed = Processed(logits, p);
  int kept = static_cast<int>(
      std::count_if(processed.begin(), processed.end(), [](float v) { return !std::isinf(v); }));
  EXPECT_GT(kept, 3);
  EXPECT_LT(kept, 25);
  ExpectFrequenciesMatch(logits, p, kept);
}

TEST(SamplerStatsTest, MinPSamplingMatchesTheSurvivors) {
  SamplingParams p;
  p.min_p = 0.2f;
  std::vector<float> logits = TestLogits(30, 2.0f);
  int kept = 0;
  float max_logit = *std::max_element(logits.begin(), logits.end());
  for (float v : logits) kept += std::exp(v - max_logit) >= 0.2f;
  EXPECT_GT(kept, 3);
  ExpectFrequenciesMatch(logits, p, kept);
}

TEST(SamplerTest, GreedyPicksTheArgMaxAfterProcessors) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.bad_token_ids = {1};
  SequenceSamplingState s;
  SamplingRow row{&p, &s};
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.9f};
  EXPECT_EQ(SampleBatch(logits, {.vocab_size = 4}, std::span(&row, 1))[0].token_id, 3);
}

// The same request gives the same tokens alone, in a batch, and in another order.
TEST(SamplerTest, SeededDrawsDoNotDependOnTheBatch) {
  const int vocab = 64;
  std::vector<SamplingParams> params(5);
  params[1].top_k = 8;
  params[2].top_p = 0.5f;
  params[3].temperature = 0.0f;
  params[4].min_p = 0.1f;
  params[4].repetition_penalty = 1.3f;
  std::vector<SequenceSamplingState> states;
  for (int i = 0; i < 5; ++i) {
    states.push_back(MakeSequenceState(std::vector<int32_t>(3 + i, 7), 100 + i));
  }
  std::vector<float> logits = TestLogits(vocab, 3.0f);
  std::vector<int32_t> alone;
  for (int i = 0; i < 5; ++i) {
    std::vector<float> row = logits;
    SamplingRow r{&params[i], &states[i]};
    alone.push_back(SampleBatch(row, {.vocab_size = vocab}, std::span(&r, 1))[0].token_id);
  }
  std::vector<SamplingRow> batch;
  std::vector<float> block;
  for (int i : {3, 0, 4, 1, 2}) {
    batch.push_back({&params[i], &states[i]});
    block.insert(block.end(), logits.begin(), logits.end());
  }
  std::vector<SampledToken> out = SampleBatch(block, {.vocab_size = vocab}, batch);
  std::vector<int32_t> batched(5);
  int order[] = {3, 0, 4, 1, 2};
  for (int j = 0; j < 5; ++j) batched[order[j]] = out[j].token_id;
  EXPECT_EQ(alone, batched);
}

// A request resumed elsewhere from its tokens continues identically: draws depend on
// (seed, position) only, not on how many draws this process made before.
TEST(SamplerTest, ResumedSequenceContinuesIdentically) {
  SamplingParams p;
  p.temperature = 1.5f;
  std::vector<float> logits = TestLogits(50, 2.0f);
  auto run = [&](SequenceSamplingState s, int steps) {
    for (int i = 0; i < steps; ++i) {
      std::vector<float> row = logits;
      SamplingRow r{&p, &s};
      AppendToken(s, SampleBatch(row, {.vocab_size = 50}, std::span(&r, 1))[0].token_id);
    }
    return s.output_ids;
  };
  std::vector<int32_t> prompt = {1, 2, 3};
  std::vector<int32_t> full = run(MakeSequenceState(prompt, 42), 40);
  SequenceSamplingState resumed = MakeSequenceState(prompt, 42);
  for (int i = 0; i < 25; ++i) AppendToken(resumed, full[i]);
  EXPECT_EQ(run(resumed, 15), full);
  EXPECT_NE(run(MakeSequenceState(prompt, 43), 40), full);
}

TEST(SamplerTest, SampleSeedsAreReproducibleAndDistinct) {
  EXPECT_EQ(SampleSeed(9, 0), 9u);
  std::map<uint64_t, int> seen;
  for (int i = 0; i < 16; ++i) ++seen[SampleSeed(9, i)];
  EXPECT_EQ(seen.size(), 16u);
  EXPECT_EQ(SampleSeed(9, 5), SampleSeed(9, 5));
  std::vector<SequenceSamplingState> samples = MakeSampleStates(std::vector<int32_t>{1}, 9, 4);
  ASSERT_EQ(samples.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(samples[i].seed, SampleSeed(9, i));
  SamplingParams unseeded;
  EXPECT_NE(ResolveSeed(unseeded), ResolveSeed(unseeded));
  unseeded.seed = 77;
  EXPECT_EQ(ResolveSeed(unseeded), 77u);
}

// Logprobs come from the distribution after penalties and temperature, before truncation.
TEST(SamplerTest, LogprobsAreTakenAfterTemperatureBeforeTruncation) {
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 1;
  p.logprobs = 2;
  p.logit_bias = {{0, 1.0f}};
  SequenceSamplingState s;
  SamplingRow row{&p, &s};
  std::vector<float> logits = {1.0f, 2.5f, 0.0f};  // after bias and /0.5: 4, 5, 0
  SampledToken t = SampleBatch(logits, {.vocab_size = 3}, std::span(&row, 1))[0];
  double lse = std::log(std::exp(4.0) + std::exp(5.0) + std::exp(0.0));
  EXPECT_EQ(t.token_id, 1);
  ASSERT_TRUE(t.logprobs.has_value());
  EXPECT_NEAR(t.logprobs->chosen.logprob, 5.0 - lse, 1e-6);
  ASSERT_EQ(t.logprobs->top.size(), 2u);
  EXPECT_EQ(t.logprobs->top[0].token_id, 1);
  EXPECT_EQ(t.logprobs->top[1].token_id, 0);
  EXPECT_NEAR(t.logprobs->top[1].logprob, 4.0 - lse, 1e-6);
  p.logprobs.reset();
  logits = {1.0f, 2.5f, 0.0f};
  EXPECT_FALSE(SampleBatch(logits, {.vocab_size = 3}, std::span(&row, 1))[0].logprobs);
}

TEST(SamplerTest, GreedyLogprobsUseTemperatureOne) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logprobs = 0;
  SequenceSamplingState s;
  SamplingRow row{&p, &s};
  std::vector<float> logits = {0.0f, 1.0f};
  SampledToken t = SampleBatch(logits, {.vocab_size = 2}, std::span(&row, 1))[0];
  EXPECT_NEAR(t.logprobs->chosen.logprob, -std::log(1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_TRUE(t.logprobs->top.empty());
}

}  // namespace
}  // namespace tandem
