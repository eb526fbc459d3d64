#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/add_rms_norm.h"
#include "common/backend/cuda/kernels/device_utils.cuh"

namespace tandem {
namespace {

constexpr int kThreads = 256;

// One block per row: pass 1 adds and sums squares, pass 2 scales (re-reading the row from L1/L2).
__global__ void __launch_bounds__(kThreads) AddRmsNormKernel(AddRmsNormArgs args) {
  cuda_kernels::AllowNextGrid();
  cuda_kernels::WaitForPreviousGrid();
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  float* residual = args.residual + r * args.dim;
  const __nv_bfloat16* x = args.x == nullptr ? nullptr : args.x + r * args.dim;
  float sum_squares = 0.0f;
  for (int64_t i = threadIdx.x; i < args.dim; i += kThreads) {
    float value = residual[i];
    if (x != nullptr) {
      value += __bfloat162float(x[i]);
      residual[i] = value;
    }
    sum_squares += value * value;
  }
  sum_squares = cuda_kernels::BlockSum(sum_squares, scratch);
  const float inv_rms = 1.0f / sqrtf(sum_squares / static_cast<float>(args.dim) + args.eps);
  __nv_bfloat16* out = args.out + r * args.dim;
  for (int64_t i = threadIdx.x; i < args.dim; i += kThreads) {
    out[i] = __float2bfloat16(__bfloat162float(args.weight[i]) * (residual[i] * inv_rms));
  }
}

}  // namespace

absl::Status LaunchAddRmsNorm(const AddRmsNormArgs& args, cudaStream_t stream) {
  if (args.num_rows < 0 || args.dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "add_rms_norm: num_rows must be >= 0 and dim > 0, got ", args.num_rows, ", ", args.dim));
  }
  if (args.num_rows == 0) return absl::OkStatus();
  if (args.residual == nullptr || args.weight == nullptr || args.out == nullptr) {
    return absl::InvalidArgumentError("add_rms_norm: null pointer");
  }
  TANDEM_CUDA_CHECK(cuda_kernels::LaunchDependent(
      AddRmsNormKernel, dim3(static_cast<unsigned>(args.num_rows)), dim3(kThreads), stream, args));
  return absl::OkStatus();
}

}  // namespace tandem
