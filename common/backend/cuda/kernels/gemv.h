// Batch-1..8 GEMV for decode steps: out[m][n] = sum_k a[m][k] * w[n][k] for m <= 8 rows,
// the same contract as CublasLtGemm::MatMulTransposed (GemmArgs: bf16 or fp32 output, fp32
// accumulate-into-output for the residual). At these shapes the product is a pass over the
// weights, so the kernel is built for bandwidth: a block of 8 warps owns a few weight rows
// and splits k between its warps (each warp instruction reads 512 contiguous bytes of a row,
// 16-byte evict-first loads, 8 in flight per lane), so even k = 4096 rows are one or two
// round trips per block and many short blocks keep every SM streaming to the end; the few
// activation rows come through the read-only cache; fp32 accumulation, warp then block
// reduction in a fixed order (deterministic). Launched as a programmatic dependent launch:
// its blocks may start while the previous kernel in the stream finishes and issue their
// first weight loads before waiting for it (griddepcontrol.wait) to read the activations.
//
// GemmOutput::kSiluMulBf16 (n even) fuses the MLP's SiLU·mul into the epilogue (w's rows
// interleaved gate/up pairs; out [m][n / 2]); kRows1 runs as kRows2 there.
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

// Weight rows per block of 8 warps. kAuto is 4 rows, the fastest at m = 1 on every 8B decode
// shape (docs/cuda_backend.md, session 4); the benchmark times every tiling and the test
// checks every one.
enum class GemvTiling { kAuto, kRows1, kRows2, kRows4, kRows8 };

bool GemvSupports(const GemmArgs& args);

// InvalidArgument where GemvSupports is false or the sizes are bad.
absl::Status LaunchGemv(const GemmArgs& args, cudaStream_t stream,
                        GemvTiling tiling = GemvTiling::kAuto);

}  // namespace tandem
