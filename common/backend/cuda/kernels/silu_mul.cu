#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/silu_mul.h"

namespace tandem {
namespace {

constexpr int kThreads = 256;

using cuda_kernels::Silu;

// Each thread handles 8 consecutive outputs (two 16-byte loads of 8 (gate, up) pairs, one
// 16-byte store) when dim % 8 == 0.
__global__ void SiluMulVec8Kernel(SiluMulArgs args) {
  cuda_kernels::AllowNextGrid();
  cuda_kernels::WaitForPreviousGrid();
  const int64_t chunks_per_row = args.dim / 8;
  const int64_t total = args.num_rows * chunks_per_row;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; c < total;
       c += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = c / chunks_per_row, i = (c % chunks_per_row) * 8;
    const __nv_bfloat16* pairs = args.gate_up + r * 2 * args.dim + 2 * i;
    float lo[8], hi[8], o[8];
    cuda_kernels::LoadBf16x8(pairs, lo);
    cuda_kernels::LoadBf16x8(pairs + 8, hi);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      o[e] = Silu(lo[2 * e]) * lo[2 * e + 1];
      o[e + 4] = Silu(hi[2 * e]) * hi[2 * e + 1];
    }
    cuda_kernels::StoreBf16x8(args.out + r * args.dim + i, o);
  }
}

__global__ void SiluMulScalarKernel(SiluMulArgs args) {
  cuda_kernels::AllowNextGrid();
  cuda_kernels::WaitForPreviousGrid();
  const int64_t total = args.num_rows * args.dim;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; c < total;
       c += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t r = c / args.dim, i = c % args.dim;
    const __nv_bfloat16* pair = args.gate_up + r * 2 * args.dim + 2 * i;
    float g = __bfloat162float(pair[0]), u = __bfloat162float(pair[1]);
    args.out[c] = __float2bfloat16(Silu(g) * u);
  }
}

unsigned NumBlocks(int64_t work_items) {
  return static_cast<unsigned>(std::min<int64_t>((work_items + kThreads - 1) / kThreads, 65535));
}

}  // namespace

absl::Status LaunchSiluMul(const SiluMulArgs& args, cudaStream_t stream) {
  if (args.num_rows < 0 || args.dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "silu_mul: num_rows must be >= 0 and dim > 0, got ", args.num_rows, ", ", args.dim));
  }
  if (args.num_rows == 0) return absl::OkStatus();
  if (args.gate_up == nullptr || args.out == nullptr) {
    return absl::InvalidArgumentError("silu_mul: null pointer");
  }
  const bool aligned = reinterpret_cast<uintptr_t>(args.gate_up) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(args.out) % 16 == 0;
  if (args.dim % 8 == 0 && aligned) {
    TANDEM_CUDA_CHECK(cuda_kernels::LaunchDependent(
        SiluMulVec8Kernel, dim3(NumBlocks(args.num_rows * args.dim / 8)), dim3(kThreads), stream,
        args));
  } else {
    TANDEM_CUDA_CHECK(cuda_kernels::LaunchDependent(
        SiluMulScalarKernel, dim3(NumBlocks(args.num_rows * args.dim)), dim3(kThreads), stream,
        args));
  }
  return absl::OkStatus();
}

}  // namespace tandem
