// Matrix product as the Llama linear layers use it: out[m][n] = sum_k a[m][k] * w[n][k]
// (w is a Hugging Face Linear weight [out][in]). Reference for the cuBLASLt GEMMs; double
// accumulation, so it is exact to fp32 rounding whatever k is.
#pragma once

#include <cstdint>
#include <span>

namespace tandem::reference {

// a: [m][k]; w: [n][k]; out: [m][n].
void MatMulTransposed(std::span<const float> a, int64_t m, int64_t k, std::span<const float> w,
                      int64_t n, std::span<float> out);

}  // namespace tandem::reference
