// Properties of the reference kernels that the fixture comparison cannot isolate.
#include <cmath>
#include <numeric>
#include <random>

#include "common/backend/reference/activation.h"
#include "common/backend/reference/paged_attention.h"
#include "common/backend/reference/rms_norm.h"
#include "common/backend/reference/rope.h"
#include "gtest/gtest.h"

namespace tandem::reference {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

TEST(RmsNormTest, MatchesDoublePrecisionFormula) {
  const int64_t dim = 37, rows = 5;
  std::vector<float> x = Random(rows * dim, 1), w = Random(dim, 2), out(rows * dim);
  RmsNorm(x, w, 1e-5f, dim, out);
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t i = 0; i < dim; ++i) ms += double(x[r * dim + i]) * x[r * dim + i];
    double inv = 1.0 / std::sqrt(ms / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i) {
      EXPECT_NEAR(out[r * dim + i], w[i] * x[r * dim + i] * inv, 1e-5);
    }
  }
}

TEST(RopeTest, PreservesNormAndDependsOnlyOnRelativePosition) {
  ModelConfig config;
  config.head_dim = 16;
  config.rope_theta = 10000.0f;
  std::vector<float> inv_freq = RopeInverseFrequencies(config);
  std::vector<float> q = Random(16, 3), k = Random(16, 4);
  auto rotated_dot = [&](int32_t pq, int32_t pk) {
    std::vector<float> a = q, b = k;
    ApplyRope(a, 1, 16, std::span(&pq, 1), inv_freq);
    ApplyRope(b, 1, 16, std::span(&pk, 1), inv_freq);
    return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
  };
  EXPECT_NEAR(rotated_dot(5, 2), rotated_dot(13, 10), 1e-4);
  std::vector<float> a = q;
  int32_t pos = 0;
  ApplyRope(a, 1, 16, std::span(&pos, 1), inv_freq);
  for (int i = 0; i < 16; ++i) EXPECT_FLOAT_EQ(a[i], q[i]);
}

TEST(RopeTest, Llama3ScalingKeepsHighFrequenciesAndDividesLowOnes) {
  ModelConfig config;
  config.head_dim = 64;
  config.rope_theta = 500000.0f;
  std::vector<float> plain = RopeInverseFrequencies(config);
  config.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 8.0f,
                         .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                         .original_max_position_embeddings = 8192};
  std::vector<float> scaled = RopeInverseFrequencies(config);
  EXPECT_FLOAT_EQ(scaled.front(), plain.front());
  EXPECT_FLOAT_EQ(scaled.back(), plain.back() / 8.0f);
}

TEST(SiluMulTest, MatchesFormula) {
  std::vector<float> gate_up = Random(2 * 3 * 4, 5), out(3 * 4);
  SiluMul(gate_up, 4, out);
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < 4; ++i) {
      float g = gate_up[r * 8 + i], u = gate_up[r * 8 + 4 + i];
      EXPECT_NEAR(out[r * 4 + i], g / (1 + std::exp(-g)) * u, 1e-6);
    }
  }
}

// Paged attention with a shuffled block table equals plain causal attention over
// contiguous K/V, for GQA (4 query heads sharing 2 kv heads).
TEST(PagedAttentionTest, MatchesContiguousCausalAttention) {
  const int64_t tokens = 11, heads = 4, kv_heads = 2, dim = 8, block = 4, blocks = 6;
  std::vector<float> q = Random(tokens * heads * dim, 6), k = Random(tokens * kv_heads * dim, 7),
                     v = Random(tokens * kv_heads * dim, 8);
  std::vector<float> k_cache(blocks * block * kv_heads * dim), v_cache(k_cache.size());
  LayerKv cache{k_cache.data(), v_cache.data(), blocks * block, kv_heads, dim};
  std::vector<int32_t> table = {4, 0, 2}, positions(tokens), slots(tokens);
  std::iota(positions.begin(), positions.end(), 0);
  for (int t = 0; t < tokens; ++t) slots[t] = table[t / block] * block + t % block;
  WriteKv(k, v, slots, cache);
  std::vector<float> out(q.size());
  std::vector<int32_t> starts = {0, static_cast<int32_t>(tokens)};
  std::vector<std::span<const int32_t>> tables = {table};
  const float scale = 1.0f / std::sqrt(float(dim));
  PagedAttention(q, heads, starts, tables, positions, block, cache, scale, out);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      int64_t g = h / (heads / kv_heads);
      std::vector<double> s(t + 1);
      double mx = -1e30, sum = 0;
      for (int64_t p = 0; p <= t; ++p) {
        double dot = 0;
        for (int64_t i = 0; i < dim; ++i) {
          dot += double(q[(t * heads + h) * dim + i]) * k[(p * kv_heads + g) * dim + i];
        }
        s[p] = dot * scale;
        mx = std::max(mx, s[p]);
      }
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int64_t i = 0; i < dim; ++i) {
        double expect = 0;
        for (int64_t p = 0; p <= t; ++p) expect += s[p] / sum * v[(p * kv_heads + g) * dim + i];
        EXPECT_NEAR(out[(t * heads + h) * dim + i], expect, 1e-5) << t << " " << h << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace tandem::reference
