// Device helpers shared by the kernels (.cu files only): warp/block reductions and 16-byte
// bf16 vector loads and stores.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

namespace tandem::cuda_kernels {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// Sum over the block, returned to every thread. `scratch` holds 32 floats; blockDim.x is a
// multiple of 32. Ends with a barrier, so scratch may be reused after it.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int num_warps = blockDim.x / 32;
  v = WarpSum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < num_warps ? scratch[lane] : 0.0f;
  total = WarpSum(total);
  __syncthreads();
  return total;
}

// 8 bf16 (16 bytes, 16-byte aligned) to fp32.
__device__ __forceinline__ void LoadBf16x8(const __nv_bfloat16* p, float (&out)[8]) {
  uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 f = __bfloat1622float2(pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ void StoreBf16x8(__nv_bfloat16* p, const float (&in)[8]) {
  uint4 raw;
  __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) pairs[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// silu(x) = x / (1 + e^-x) in fp32: the one definition SiLU·mul and the GEMV's fused
// epilogue share, so both paths give the same bits.
__device__ __forceinline__ float Silu(float x) { return x / (1.0f + expf(-x)); }

// Hugging Face rotate_half for one pair (x[i], x[i + D/2]) at angle position * inv_freq[i]
// (cos_value, sin_value from sincosf): the one definition RoPE + KV write and the decode
// attention's fused RoPE share, so both give the same bits.
__device__ __forceinline__ void RopeRotate(float a, float b, float cos_value, float sin_value,
                                           float& first, float& second) {
  first = a * cos_value - b * sin_value;
  second = b * cos_value + a * sin_value;
}

// Whether `p` is a multiple of `bytes` (a power of two).
__host__ __device__ __forceinline__ bool AlignedTo(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

__host__ __device__ __forceinline__ bool Aligned16(const void* p) { return AlignedTo(p, 16); }

// Programmatic dependent launch (sm_90). A kernel launched with LaunchDependent may have its
// blocks scheduled before the previous kernel in the stream has finished; it must call
// WaitForPreviousGrid (griddepcontrol.wait: the previous grid complete, its writes visible)
// before it touches memory that kernel reads or writes. Called first thing, the kernel is
// ordered exactly as without the attribute, and only its launch and ramp-up overlap the
// previous kernel's tail. Without the attribute the wait returns at once.
__device__ __forceinline__ void WaitForPreviousGrid() {
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
}

// Lets the next kernel in the stream (if launched with LaunchDependent) be scheduled once
// every block of this grid has called this or exited. Safe anywhere: the next kernel still
// waits for this grid's completion before touching memory.
__device__ __forceinline__ void AllowNextGrid() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// `kernel<<<grid, block, shared_bytes, stream>>>(args...)` as a programmatic dependent of
// the previous kernel in the stream (see WaitForPreviousGrid).
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchDependentShared(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                                  size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// The same without dynamic shared memory.
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchDependent(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                            cudaStream_t stream, Args&&... args) {
  return LaunchDependentShared(kernel, grid, block, 0, stream, std::forward<Args>(args)...);
}

}  // namespace tandem::cuda_kernels
