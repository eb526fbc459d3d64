#include "common/backend/reference/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/logging.h"

namespace tandem::reference {
namespace {

// Double accumulation in eight independent lanes: vectorizes without -ffast-math, and keeps
// the score's rounding far below the 1e-4 logit tolerance whatever the head size.
float Dot(const float* a, const float* b, int64_t n) {
  double partial[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) partial[j] += static_cast<double>(a[i + j]) * b[i + j];
  }
  double sum = ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
               ((partial[4] + partial[5]) + (partial[6] + partial[7]));
  for (; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(sum);
}

}  // namespace

void WriteKv(std::span<const float> k, std::span<const float> v,
             std::span<const int32_t> slot_mapping, const LayerKv& cache) {
  int64_t row = cache.num_kv_heads * cache.head_dim;
  TANDEM_CHECK(k.size() == slot_mapping.size() * row && v.size() == k.size());
  for (size_t t = 0; t < slot_mapping.size(); ++t) {
    int64_t slot = slot_mapping[t];
    TANDEM_CHECK(slot >= 0 && slot < cache.num_slots) << "slot " << slot;
    std::copy_n(k.data() + t * row, row, cache.k + slot * row);
    std::copy_n(v.data() + t * row, row, cache.v + slot * row);
  }
}

void AttendOneHead(std::span<const float> q, int64_t kv_head, int32_t position,
                   std::span<const int32_t> block_table, int64_t block_size,
                   const LayerKv& cache, float scale, std::span<float> scores,
                   std::span<float> out) {
  const int64_t dim = cache.head_dim;
  const int64_t row = cache.num_kv_heads * dim;
  const int64_t context = static_cast<int64_t>(position) + 1;
  auto slot_of = [&](int64_t p) { return block_table[p / block_size] * block_size + p % block_size; };
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t p = 0; p < context; ++p) {
    const float* key = cache.k + slot_of(p) * row + kv_head * dim;
    scores[p] = Dot(q.data(), key, dim) * scale;
    max_score = std::max(max_score, scores[p]);
  }
  double sum = 0.0;
  for (int64_t p = 0; p < context; ++p) {
    scores[p] = std::exp(scores[p] - max_score);
    sum += scores[p];
  }
  std::fill(out.begin(), out.end(), 0.0f);
  for (int64_t p = 0; p < context; ++p) {
    const float* value = cache.v + slot_of(p) * row + kv_head * dim;
    float weight = static_cast<float>(scores[p] / sum);
    for (int64_t i = 0; i < dim; ++i) out[i] += weight * value[i];
  }
}

void PagedAttention(std::span<const float> q, int64_t num_heads,
                    std::span<const int32_t> query_start,
                    std::span<const std::span<const int32_t>> block_tables,
                    std::span<const int32_t> positions, int64_t block_size,
                    const LayerKv& cache, float scale, std::span<float> out) {
  const int64_t dim = cache.head_dim;
  const int64_t group = num_heads / cache.num_kv_heads;
  std::vector<float> scores;
  for (size_t s = 0; s + 1 < query_start.size(); ++s) {
    for (int32_t t = query_start[s]; t < query_start[s + 1]; ++t) {
      scores.resize(static_cast<size_t>(positions[t]) + 1);
      for (int64_t h = 0; h < num_heads; ++h) {
        size_t offset = static_cast<size_t>((t * num_heads + h) * dim);
        AttendOneHead(q.subspan(offset, dim), h / group, positions[t], block_tables[s],
                      block_size, cache, scale, scores, out.subspan(offset, dim));
      }
    }
  }
}

}  // namespace tandem::reference
