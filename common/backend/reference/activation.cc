#include "common/backend/reference/activation.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"

namespace tandem::reference {

void SiluMul(std::span<const float> gate_up, int64_t dim, std::span<float> out) {
  TANDEM_CHECK(gate_up.size() == 2 * out.size() && out.size() % dim == 0);
  int64_t num_rows = static_cast<int64_t>(out.size()) / dim;
  for (int64_t r = 0; r < num_rows; ++r) {
    const float* gate = gate_up.data() + r * 2 * dim;
    const float* up = gate + dim;
    float* o = out.data() + r * dim;
    for (int64_t i = 0; i < dim; ++i) {
      float silu = gate[i] / (1.0f + std::exp(-gate[i]));
      o[i] = silu * up[i];
    }
  }
}

void EmbeddingGather(std::span<const float> table, int64_t dim,
                     std::span<const int32_t> token_ids, std::span<float> out) {
  int64_t vocab = static_cast<int64_t>(table.size()) / dim;
  TANDEM_CHECK(out.size() == token_ids.size() * dim);
  for (size_t t = 0; t < token_ids.size(); ++t) {
    TANDEM_CHECK(token_ids[t] >= 0 && token_ids[t] < vocab) << "token id " << token_ids[t];
    std::copy_n(table.data() + token_ids[t] * dim, dim, out.data() + t * dim);
  }
}

}  // namespace tandem::reference
