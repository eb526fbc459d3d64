#include "common/backend/reference/rms_norm.h"

#include <cmath>

#include "common/logging.h"

namespace tandem::reference {
namespace {

void NormalizeRow(const float* x, const float* weight, float eps, int64_t dim, float* out) {
  double sum_squares = 0.0;  // double: the row's scale must not depend on summation order
  for (int64_t i = 0; i < dim; ++i) sum_squares += static_cast<double>(x[i]) * x[i];
  float inv_rms = 1.0f / std::sqrt(static_cast<float>(sum_squares / dim) + eps);
  for (int64_t i = 0; i < dim; ++i) out[i] = weight[i] * (x[i] * inv_rms);
}

}  // namespace

void RmsNorm(std::span<const float> x, std::span<const float> weight, float eps, int64_t dim,
             std::span<float> out) {
  TANDEM_CHECK(static_cast<int64_t>(weight.size()) == dim);
  TANDEM_CHECK(x.size() == out.size() && x.size() % dim == 0);
  int64_t num_rows = static_cast<int64_t>(x.size()) / dim;
  for (int64_t r = 0; r < num_rows; ++r) {
    NormalizeRow(x.data() + r * dim, weight.data(), eps, dim, out.data() + r * dim);
  }
}

void AddRmsNorm(std::span<float> residual, std::span<const float> x,
                std::span<const float> weight, float eps, int64_t dim, std::span<float> out) {
  TANDEM_CHECK(residual.size() == x.size() && x.size() == out.size());
  for (size_t i = 0; i < residual.size(); ++i) residual[i] += x[i];
  RmsNorm(residual, weight, eps, dim, out);
}

}  // namespace tandem::reference
