// Skinny tensor-core GEMM for decode batches of 1..64 rows: out[m][n] = sum_k a[m][k] *
// w[n][k], the contract of CublasLtGemm::MatMulTransposed and LaunchGemv (GemmArgs: bf16 or
// fp32 output, fp32 accumulate-into-output for the residual, the fused SiLU·mul epilogue on
// interleaved gate/up rows).
//
// At these shapes a decode step's GEMM is still a pass over the weights (64 flops per weight
// byte at m = 64, ~275 TFLOP/s at the H200's 4.3 TB/s), and cuBLASLt reads the 8B's qkv and
// o projections at 68-77% of the copy rate there. The kernel, with tensor cores (mma.sync):
//   - each warp owns 16 * m_tiles weight rows; a lane copies (cp.async, 8 k-steps of 32 in
//     flight) exactly the 16 bytes per row and step that form its mma A fragment into its
//     own shared-memory ring: the k order inside a 32-wide step is permuted so that a lane's
//     16 contiguous bytes are its fragment, and the activations are read in the same order
//     (a dot product does not care about the order of its terms);
//   - the block's warps share their k range: each k-step's activations are copied once per
//     block into a shared ring (one barrier per step);
//   - k is split over `splits` blocks that form one thread-block cluster and sum their fp32
//     partials through distributed shared memory in rank order (deterministic; no
//     workspace, no second launch); the configuration is chosen from the occupancy API so
//     the grid fills the SMs (a cluster's blocks share a GPC);
//   - launched as a programmatic dependent: the first weight copies are issued before
//     waiting for the previous kernel (whose output is `a`).
// Built for sm_90a (the default TANDEM_CUDA_ARCHITECTURES) it has a second main loop, chosen
// whenever built (SkinnyGemmConfig::wgmma_rows): a producer warp streams 64-wide k blocks of
// weights and activations with tensor copies (128-byte swizzle, 4 stages on mbarriers) and
// one consumer warpgroup multiplies them with wgmma, the batch as the 64-row M (rows past m
// read as zeros) and 64 or 128 weight rows as N; the same cluster split-K epilogue.
// Measured on the H200 (docs/cuda_backend.md, "Session 9"): the mma.sync loop reads 48-60%
// of the copy rate at m = 64, the wgmma loop 58-92% (qkv 69%, o 58%, gate_up 83%, down 80%,
// LM head 92%, against cuBLASLt's 76 / 70 / 94 / 79 / 90%), and a batch-64 step with it is
// 0.19 ms slower than with cuBLASLt, so the runner leaves it off by default
// (CudaRunnerOptions::skinny_gemm_max_rows).
//
// Needs 1 <= m <= kSkinnyGemmMaxRows, k % 32 == 0, 16-byte aligned a and w (SkinnyGemmSupports);
// otherwise the caller uses cuBLASLt. Reference: reference::MatMulTransposed.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/backend/cuda/cublaslt_gemm.h"

namespace tandem {

constexpr int64_t kSkinnyGemmMaxRows = 64;

// A block shape and split count. warps x m_tiles (16 weight rows each) rows per block; splits
// in [1, 8] blocks share one row range's k (a cluster). Zero fields: chosen from the shape.
struct SkinnyGemmConfig {
  int warps = 0;    // 4 or 8
  int m_tiles = 0;  // 1 or 2
  int splits = 0;   // 1..8
  // 64 or 128 (warps and m_tiles 0): the wgmma kernel with that many weight rows per block
  // (built for sm_90a only; SkinnyGemmAllConfigs lists it then).
  int wgmma_rows = 0;
};

bool SkinnyGemmSupports(const GemmArgs& args);

// The configuration LaunchSkinnyGemm uses for args when config has zeros.
SkinnyGemmConfig SkinnyGemmChooseConfig(const GemmArgs& args);

// Every configuration the kernel has (for the benchmark's sweep and the tests).
std::vector<SkinnyGemmConfig> SkinnyGemmAllConfigs();

// InvalidArgument where SkinnyGemmSupports is false or the config is not one of the kernel's.
absl::Status LaunchSkinnyGemm(const GemmArgs& args, cudaStream_t stream,
                              SkinnyGemmConfig config = {});

}  // namespace tandem
