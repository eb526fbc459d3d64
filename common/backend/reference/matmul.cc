#include "common/backend/reference/matmul.h"

#include "common/logging.h"

namespace tandem::reference {

void MatMulTransposed(std::span<const float> a, int64_t m, int64_t k, std::span<const float> w,
                      int64_t n, std::span<float> out) {
  TANDEM_CHECK(static_cast<int64_t>(a.size()) == m * k);
  TANDEM_CHECK(static_cast<int64_t>(w.size()) == n * k);
  TANDEM_CHECK(static_cast<int64_t>(out.size()) == m * n);
  for (int64_t i = 0; i < m; ++i) {
    const float* row = a.data() + i * k;
    for (int64_t j = 0; j < n; ++j) {
      const float* col = w.data() + j * k;
      double sum = 0.0;
      for (int64_t x = 0; x < k; ++x) sum += static_cast<double>(row[x]) * col[x];
      out[i * n + j] = static_cast<float>(sum);
    }
  }
}

}  // namespace tandem::reference
