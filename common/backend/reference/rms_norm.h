// RMSNorm (Llama): out[r][i] = x[r][i] / sqrt(mean_i(x[r]^2) + eps) * weight[i].
// Reference for the fused CUDA kernels; the CPU backend uses it directly.
#pragma once

#include <cstdint>
#include <span>

namespace tandem::reference {

// x, out: [num_rows][dim] (may alias); weight: [dim].
void RmsNorm(std::span<const float> x, std::span<const float> weight, float eps, int64_t dim,
             std::span<float> out);

// Fused residual add + RMSNorm: residual += x, then out = RmsNorm(residual).
// residual, x, out: [num_rows][dim]; out may alias x, not residual.
void AddRmsNorm(std::span<float> residual, std::span<const float> x,
                std::span<const float> weight, float eps, int64_t dim, std::span<float> out);

}  // namespace tandem::reference
