#include "common/sampling/sampler.h"

#include <cmath>
#include <limits>
#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

TEST(SamplingParamsTest, RejectsOutOfRangeFieldsByName) {
  SamplingParams p;
  p.temperature = -0.5f;
  EXPECT_THAT(p.Validate().message(), HasSubstr("temperature must be"));
  p = {};
  p.temperature = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(p.Validate().message(), HasSubstr("temperature"));
  p = {};
  p.top_k = -1;
  EXPECT_THAT(p.Validate().message(), HasSubstr("top_k must be >= 0"));
  p = {};
  p.top_p = 1.5f;
  EXPECT_EQ(p.Validate().message(), "top_p must be in (0, 1], got 1.5");
  p.top_p = 0.0f;
  EXPECT_THAT(p.Validate().message(), HasSubstr("top_p"));
  p = {};
  p.max_tokens = 0;
  EXPECT_THAT(p.Validate().message(), HasSubstr("max_tokens"));
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
}

TEST(SamplerTest, GreedyPicksArgMax) {
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.9f};
  std::vector<std::pair<float, int32_t>> scratch;
  SamplingParams p;
  p.temperature = 0.0f;
  EXPECT_EQ(SampleToken(logits, p, 7, 0, scratch), 1);
}

TEST(SamplerTest, SeededDrawDependsOnlyOnSeedAndPosition) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(float(i));
  std::vector<std::pair<float, int32_t>> scratch;
  SamplingParams p;
  std::vector<int32_t> first, second;
  for (int pos = 0; pos < 100; ++pos) first.push_back(SampleToken(logits, p, 42, pos, scratch));
  for (int pos = 99; pos >= 0; --pos) second.insert(second.begin(), SampleToken(logits, p, 42, pos, scratch));
  EXPECT_EQ(first, second);
  std::vector<int32_t> other;
  for (int pos = 0; pos < 100; ++pos) other.push_back(SampleToken(logits, p, 43, pos, scratch));
  EXPECT_NE(first, other);
}

TEST(SamplerTest, TopKAndTopPRestrictTheSupport) {
  std::vector<float> logits = {1.0f, 4.0f, 3.0f, 2.0f, 0.0f};
  std::vector<std::pair<float, int32_t>> scratch;
  SamplingParams p;
  p.top_k = 2;
  for (int pos = 0; pos < 500; ++pos) {
    int32_t t = SampleToken(logits, p, 1, pos, scratch);
    EXPECT_TRUE(t == 1 || t == 2) << t;
  }
  p = {};
  p.top_p = 0.5f;  // softmax mass of token 1 alone is ~0.64
  for (int pos = 0; pos < 500; ++pos) EXPECT_EQ(SampleToken(logits, p, 1, pos, scratch), 1);
}

// Frequencies over 100k seeded draws match softmax(logits / T) (chi-square, 4 dof,
// critical value 18.47 at p = 0.001).
TEST(SamplerTest, FrequenciesMatchTheDistribution) {
  std::vector<float> logits = {0.5f, 1.5f, -0.3f, 1.0f, 0.0f};
  SamplingParams p;
  p.temperature = 0.8f;
  std::vector<double> probs;
  double total = 0;
  for (float l : logits) total += std::exp(l / 0.8);
  for (float l : logits) probs.push_back(std::exp(l / 0.8) / total);
  std::vector<std::pair<float, int32_t>> scratch;
  std::vector<int> counts(logits.size());
  const int draws = 100000;
  for (int i = 0; i < draws; ++i) ++counts[SampleToken(logits, p, 2024, i, scratch)];
  double chi2 = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    double expected = probs[i] * draws;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  EXPECT_LT(chi2, 18.47);
}

}  // namespace
}  // namespace tandem
