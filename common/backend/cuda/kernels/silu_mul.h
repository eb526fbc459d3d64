// Fused SiLU·mul of the Llama MLP: out[r][i] = silu(gate_up[r][2i]) * gate_up[r][2i + 1],
// silu(x) = x / (1 + e^-x), computed in fp32.
//
// gate_up: [num_rows][2 * dim] bf16, (gate, up) pairs interleaved, as the fused gate/up GEMM
// writes them with CudaWeights' interleaved gate_up_proj rows (the GEMV path fuses this
// kernel into its epilogue instead: GemmOutput::kSiluMulBf16); out: [num_rows][dim] bf16.
// Reference: reference::SiluMul on the de-interleaved rows (gate then up).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace tandem {

struct SiluMulArgs {
  const __nv_bfloat16* gate_up = nullptr;  // [num_rows][dim][2]: (gate, up) pairs
  __nv_bfloat16* out = nullptr;            // [num_rows][dim]
  int64_t num_rows = 0;
  int64_t dim = 0;
};

absl::Status LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream);

}  // namespace tandem
