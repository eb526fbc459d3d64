#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/add_rms_norm.h"
#include "common/backend/cuda/kernels/device_utils.cuh"

namespace tandem {
namespace {

constexpr int kThreads = 256;
// Vectorized rows keep their values in registers between the two passes: up to
// kMaxVec4PerThread float4 per thread (dim <= 8192 at 256 threads).
constexpr int kMaxVec4PerThread = 8;

__device__ __forceinline__ float4 LoadBf16x4(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// One block per row, dim % 4 == 0 and 16-byte (residual) / 8-byte (bf16) aligned rows:
// float4 / 4 x bf16 accesses, the row held in registers between the sum and the scaling.
__global__ void __launch_bounds__(kThreads) AddRmsNormVec4Kernel(AddRmsNormArgs args) {
  cuda_kernels::AllowNextGrid();
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t n4 = args.dim / 4;
  // The weight is no output of the previous kernel: its loads overlap that kernel's tail
  // instead of following the reduction (one memory round trip off the critical path).
  float4 weights[kMaxVec4PerThread];
#pragma unroll
  for (int k = 0; k < kMaxVec4PerThread; ++k) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (c < n4) weights[k] = LoadBf16x4(args.weight + 4 * c);
  }
  cuda_kernels::WaitForPreviousGrid();
  float4* residual = reinterpret_cast<float4*>(args.residual + r * args.dim);
  const __nv_bfloat16* x = args.x == nullptr ? nullptr : args.x + r * args.dim;
  float4 values[kMaxVec4PerThread];
  float sum_squares = 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxVec4PerThread; ++k) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (c < n4) {
      float4 value = residual[c];
      if (x != nullptr) {
        const float4 add = LoadBf16x4(x + 4 * c);
        value.x += add.x;
        value.y += add.y;
        value.z += add.z;
        value.w += add.w;
        residual[c] = value;
      }
      sum_squares += value.x * value.x + value.y * value.y + value.z * value.z +
                     value.w * value.w;
      values[k] = value;
    }
  }
  sum_squares = cuda_kernels::BlockSum(sum_squares, scratch);
  const float inv_rms = 1.0f / sqrtf(sum_squares / static_cast<float>(args.dim) + args.eps);
  __nv_bfloat16* out = args.out + r * args.dim;
#pragma unroll
  for (int k = 0; k < kMaxVec4PerThread; ++k) {
    const int64_t c = threadIdx.x + static_cast<int64_t>(k) * kThreads;
    if (c < n4) {
      const float4 w = weights[k];
      const float4 v = values[k];
      uint2 raw;
      *reinterpret_cast<__nv_bfloat162*>(&raw.x) =
          __floats2bfloat162_rn(w.x * (v.x * inv_rms), w.y * (v.y * inv_rms));
      *reinterpret_cast<__nv_bfloat162*>(&raw.y) =
          __floats2bfloat162_rn(w.z * (v.z * inv_rms), w.w * (v.w * inv_rms));
      *reinterpret_cast<uint2*>(out + 4 * c) = raw;
    }
  }
}

// Any dim: pass 1 adds and sums squares, pass 2 scales (re-reading the row from L1/L2).
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
  const bool vec4 = args.dim % 4 == 0 && args.dim / 4 <= kMaxVec4PerThread * kThreads &&
                    cuda_kernels::AlignedTo(args.residual, 16) &&
                    cuda_kernels::AlignedTo(args.weight, 8) && cuda_kernels::AlignedTo(args.out, 8) &&
                    (args.x == nullptr || cuda_kernels::AlignedTo(args.x, 8));
  TANDEM_CUDA_CHECK(cuda_kernels::LaunchDependent(
      vec4 ? AddRmsNormVec4Kernel : AddRmsNormKernel, dim3(static_cast<unsigned>(args.num_rows)),
      dim3(kThreads), stream, args));
  return absl::OkStatus();
}

}  // namespace tandem
