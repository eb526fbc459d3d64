// Elementwise ops of the Llama MLP and the embedding gather.
#pragma once

#include <cstdint>
#include <span>

namespace tandem::reference {

// out[r][i] = silu(gate_up[r][i]) * gate_up[r][dim + i], silu(x) = x / (1 + e^-x).
// gate_up: [num_rows][2 * dim] (gate then up, as a fused gate/up GEMM writes them);
// out: [num_rows][dim].
void SiluMul(std::span<const float> gate_up, int64_t dim, std::span<float> out);

// out[t] = table[token_ids[t]]; table: [vocab][dim], out: [num_tokens][dim].
// Callers validate ids (ValidateForwardInputs); out-of-range ids are a CHECK failure.
void EmbeddingGather(std::span<const float> table, int64_t dim,
                     std::span<const int32_t> token_ids, std::span<float> out);

}  // namespace tandem::reference
