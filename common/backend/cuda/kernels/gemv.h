// Batch-1..8 GEMV for decode steps: out[m][n] = sum_k a[m][k] * w[n][k] for m <= 8 rows,
// the same contract as CublasLtGemm::MatMulTransposed (GemmArgs: bf16 or fp32 output, fp32
// accumulate-into-output for the residual). At these shapes the product is a pass over the
// weights, so the kernel is built for bandwidth: each warp streams 2 weight rows with 16-byte
// evict-first loads, 8 loads in flight per lane, the few activation rows come through the
// read-only cache, fp32 accumulation, one warp reduction per output.
//
// Needs 1 <= m <= kGemvMaxRows, k % 8 == 0 and 16-byte aligned a and w (GemvSupports);
// otherwise the caller uses cuBLASLt. Reference: reference::MatMulTransposed.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/backend/cuda/cublaslt_gemm.h"

namespace tandem {

constexpr int64_t kGemvMaxRows = 8;

bool GemvSupports(const GemmArgs& args);

// InvalidArgument where GemvSupports is false or the sizes are bad.
absl::Status LaunchGemv(const GemmArgs& args, cudaStream_t stream);

}  // namespace tandem
