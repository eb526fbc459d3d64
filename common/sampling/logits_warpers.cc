#include "common/sampling/logits_warpers.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>
#include <vector>

#include "common/logging.h"

namespace tandem {
namespace {

std::span<float> RowOf(std::span<float> logits, const SamplingContext& ctx, size_t i) {
  return logits.subspan(i * ctx.vocab_size, ctx.vocab_size);
}

// Calls `stage(row, params)` for each non-greedy row where `uses(params)`.
template <typename Uses, typename Stage>
void ForEachRow(std::span<float> logits, const SamplingContext& ctx,
                std::span<const SamplingRow> rows, Uses uses, Stage stage) {
  TANDEM_CHECK(logits.size() == rows.size() * static_cast<size_t>(ctx.vocab_size));
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingParams& p = *rows[i].params;
    if (p.greedy() || !uses(p)) continue;
    stage(RowOf(logits, ctx, i), p);
  }
}

void TopK(std::span<float> row, int32_t k, std::vector<float>& scratch) {
  if (static_cast<size_t>(k) >= row.size()) return;
  scratch.assign(row.begin(), row.end());
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<>());
  float kth = scratch[k - 1];
  for (float& value : row) {
    if (value < kth) value = -INFINITY;
  }
}

void TopP(std::span<float> row, float top_p, std::vector<std::pair<float, int32_t>>& sorted) {
  sorted.clear();
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] != -INFINITY) sorted.emplace_back(row[i], static_cast<int32_t>(i));
  }
  std::sort(sorted.begin(), sorted.end());  // ascending, as Hugging Face walks it
  if (sorted.empty()) return;
  double max_logit = sorted.back().first, total = 0.0;
  for (const auto& [value, id] : sorted) total += std::exp(value - max_logit);
  const double threshold = 1.0 - static_cast<double>(top_p);
  double cumulative = 0.0;
  for (size_t i = 0; i + 1 < sorted.size(); ++i) {  // the most likely token always stays
    cumulative += std::exp(sorted[i].first - max_logit) / total;
    if (cumulative > threshold) break;
    row[sorted[i].second] = -INFINITY;
  }
}

void MinP(std::span<float> row, float min_p) {
  float max_logit = *std::max_element(row.begin(), row.end());
  // p_i < min_p * p_max  <=>  exp(l_i - l_max) < min_p: the softmax denominator cancels.
  for (float& value : row) {
    if (std::exp(value - max_logit) < min_p) value = -INFINITY;
  }
}

}  // namespace

void ApplyTemperature(std::span<float> logits, const SamplingContext& ctx,
                      std::span<const SamplingRow> rows) {
  ForEachRow(
      logits, ctx, rows, [](const SamplingParams& p) { return p.temperature != 1.0f; },
      [](std::span<float> row, const SamplingParams& p) {
        for (float& value : row) value /= p.temperature;
      });
}

void ApplyTopK(std::span<float> logits, const SamplingContext& ctx,
               std::span<const SamplingRow> rows) {
  std::vector<float> scratch;
  ForEachRow(
      logits, ctx, rows, [](const SamplingParams& p) { return p.top_k > 0; },
      [&](std::span<float> row, const SamplingParams& p) { TopK(row, p.top_k, scratch); });
}

void ApplyTopP(std::span<float> logits, const SamplingContext& ctx,
               std::span<const SamplingRow> rows) {
  std::vector<std::pair<float, int32_t>> sorted;
  ForEachRow(
      logits, ctx, rows, [](const SamplingParams& p) { return p.top_p < 1.0f; },
      [&](std::span<float> row, const SamplingParams& p) { TopP(row, p.top_p, sorted); });
}

void ApplyMinP(std::span<float> logits, const SamplingContext& ctx,
               std::span<const SamplingRow> rows) {
  ForEachRow(
      logits, ctx, rows, [](const SamplingParams& p) { return p.min_p > 0.0f; },
      [](std::span<float> row, const SamplingParams& p) { MinP(row, p.min_p); });
}

void ApplyLogitsWarpers(std::span<float> logits, const SamplingContext& ctx,
                        std::span<const SamplingRow> rows) {
  ApplyTemperature(logits, ctx, rows);
  ApplyTopK(logits, ctx, rows);
  ApplyTopP(logits, ctx, rows);
  ApplyMinP(logits, ctx, rows);
}

}  // namespace tandem
