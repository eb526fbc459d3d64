#include "common/sampling/logprobs.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"

namespace tandem {
namespace {

double LogSumExp(std::span<const float> row) {
  TANDEM_CHECK(!row.empty());
  double max_value = *std::max_element(row.begin(), row.end());
  if (!std::isfinite(max_value)) return max_value;
  double total = 0.0;
  for (float value : row) total += std::exp(value - max_value);
  return max_value + std::log(total);
}

}  // namespace

RowLogprobs ComputeRowLogprobs(std::span<const float> row, int32_t top_n) {
  RowLogprobs out;
  out.log_normalizer = LogSumExp(row);
  size_t n = std::min<size_t>(std::max(top_n, 0), row.size());
  if (n == 0) return out;
  std::vector<int32_t> ids(row.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
    return row[a] != row[b] ? row[a] > row[b] : a < b;
  });
  for (size_t i = 0; i < n; ++i) {
    out.top.push_back({ids[i], static_cast<float>(row[ids[i]] - out.log_normalizer)});
  }
  return out;
}

void LogSoftmaxInPlace(std::span<float> row) {
  double lse = LogSumExp(row);
  for (float& value : row) value = static_cast<float>(value - lse);
}

}  // namespace tandem
