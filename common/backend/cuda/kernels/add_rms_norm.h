// Fused residual add + RMSNorm (Llama):
//   residual[r] += x[r]                       (fp32; skipped when x is null)
//   out[r][i] = weight[i] * residual[r][i] / sqrt(mean_i(residual[r]^2) + eps)   (bf16)
//
// residual: [num_rows][dim] fp32, updated in place; x, out: [num_rows][dim] bf16; weight:
// [dim] bf16. Sums of squares accumulate in fp32. Reference: reference::AddRmsNorm /
// reference::RmsNorm on the same values widened to fp32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace tandem {

struct AddRmsNormArgs {
  float* residual = nullptr;              // [num_rows][dim]
  const __nv_bfloat16* x = nullptr;       // [num_rows][dim] or null (no add)
  const __nv_bfloat16* weight = nullptr;  // [dim]
  __nv_bfloat16* out = nullptr;           // [num_rows][dim]
  int64_t num_rows = 0;
  int64_t dim = 0;
  float eps = 1e-6f;
};

absl::Status LaunchAddRmsNorm(const AddRmsNormArgs& args, cudaStream_t stream);

}  // namespace tandem
