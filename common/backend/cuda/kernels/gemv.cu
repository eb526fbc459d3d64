#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/gemv.h"

namespace tandem {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kLoadsInFlight = 8;  // 16-byte weight loads per lane issued before any use

__device__ __forceinline__ uint4 LoadStreaming(const __nv_bfloat16* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));  // read once: evict first
}

__device__ __forceinline__ void Widen8(const uint4& raw, float (&out)[8]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
  }
}

// grid ceil(n / kRows); up to kM activation rows (m <= kM at run time). Thread j of the
// block reads 16-byte chunks j, j + 256, j + 512, ... of each of the block's kRows rows.
template <int kM, int kRows>
__global__ void __launch_bounds__(kThreads) GemvKernel(GemmArgs args) {
  cuda_kernels::AllowNextGrid();  // the next kernel's blocks may fill our last wave's gaps
  constexpr int kUnroll = kRows >= kLoadsInFlight ? 1 : kLoadsInFlight / kRows;
  __shared__ float partial[kWarps][kRows * kM];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int m = static_cast<int>(args.m);
  const int64_t k = args.k, chunks = k / 8;
  const __nv_bfloat16* w_rows[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    w_rows[r] = args.w + min(n0 + r, args.n - 1) * k;  // a row past n re-reads the last one
  }
  float acc[kRows][kM];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int i = 0; i < kM; ++i) acc[r][i] = 0.0f;
  }

  for (int64_t base = threadIdx.x; base < chunks; base += kThreads * kUnroll) {
    uint4 w_raw[kUnroll][kRows];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + kThreads * u;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        w_raw[u][r] = c < chunks ? LoadStreaming(w_rows[r] + c * 8) : make_uint4(0, 0, 0, 0);
      }
    }
    // Launched as a programmatic dependent (cuda_kernels::LaunchDependent): the first weight
    // loads above depend on nothing and overlap the previous kernel's tail; the activations
    // are its output.
    if (base == threadIdx.x) cuda_kernels::WaitForPreviousGrid();
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + kThreads * u;
      if (c >= chunks) break;
#pragma unroll
      for (int i = 0; i < kM; ++i) {
        if (i >= m) break;
        float a_f[8];
        Widen8(__ldg(reinterpret_cast<const uint4*>(args.a + i * k + c * 8)), a_f);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          float w_f[8];
          Widen8(w_raw[u][r], w_f);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][i] = fmaf(w_f[e], a_f[e], acc[r][i]);
        }
      }
    }
  }

  cuda_kernels::WaitForPreviousGrid();  // no-op where done; threads past k skipped the loop
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int i = 0; i < kM; ++i) {
      if (i >= m) break;
      const float sum = cuda_kernels::WarpSum(acc[r][i]);
      if (lane == 0) partial[warp][r * kM + i] = sum;
    }
  }
  __syncthreads();
  const int64_t ldc = args.ldc != 0                               ? args.ldc
                      : args.output == GemmOutput::kSiluMulBf16 ? args.n / 2
                                                                : args.n;
  if (kRows % 2 == 0 && args.output == GemmOutput::kSiluMulBf16) {
    // Rows (gate j, up j) are neighbours and kRows is even: thread (pair, i) finishes both.
    if (static_cast<int>(threadIdx.x) >= kRows / 2 * kM) return;
    const int pair = threadIdx.x / kM, i = threadIdx.x % kM;
    if (i >= m || n0 + 2 * pair >= args.n) return;
    float gate = 0.0f, up = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      gate += partial[w][2 * pair * kM + i];
      up += partial[w][(2 * pair + 1) * kM + i];
    }
    gate = __bfloat162float(__float2bfloat16(gate));
    up = __bfloat162float(__float2bfloat16(up));
    static_cast<__nv_bfloat16*>(args.out)[i * ldc + n0 / 2 + pair] =
        __float2bfloat16(cuda_kernels::Silu(gate) * up);
    return;
  }
  if (threadIdx.x >= kRows * kM) return;
  const int r = threadIdx.x / kM, i = threadIdx.x % kM;
  if (i >= m || n0 + r >= args.n) return;
  float sum = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum += partial[w][threadIdx.x];
  const int64_t at = i * ldc + n0 + r;
  if (args.output == GemmOutput::kBF16) {
    static_cast<__nv_bfloat16*>(args.out)[at] = __float2bfloat16(sum);
  } else if (args.accumulate) {
    static_cast<float*>(args.out)[at] += sum;
  } else {
    static_cast<float*>(args.out)[at] = sum;
  }
}

template <int kM, int kRows>
void LaunchKernel(const GemmArgs& a, cudaStream_t stream) {
  TANDEM_CUDA_CHECK(cuda_kernels::LaunchDependent(
      GemvKernel<kM, kRows>, dim3(static_cast<unsigned>((a.n + kRows - 1) / kRows)),
      dim3(kThreads), stream, a));
}

template <int kRows>
void LaunchRows(const GemmArgs& a, cudaStream_t stream) {
  if (a.m == 1) {
    LaunchKernel<1, kRows>(a, stream);
  } else if (a.m == 2) {
    LaunchKernel<2, kRows>(a, stream);
  } else if (a.m <= 4) {
    LaunchKernel<4, kRows>(a, stream);
  } else {
    LaunchKernel<8, kRows>(a, stream);
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool GemvSupports(const GemmArgs& a) {
  const bool silu_mul = a.output == GemmOutput::kSiluMulBf16;
  const int64_t columns = silu_mul ? a.n / 2 : a.n;
  return a.m >= 1 && a.m <= kGemvMaxRows && a.n > 0 && a.k > 0 && a.k % 8 == 0 &&
         Aligned16(a.a) && Aligned16(a.w) && a.out != nullptr &&
         (a.ldc == 0 || a.ldc >= columns) && (!a.accumulate || a.output == GemmOutput::kF32) &&
         (!silu_mul || a.n % 2 == 0);
}

absl::Status LaunchGemv(const GemmArgs& a, cudaStream_t stream, GemvTiling tiling) {
  if (a.a == nullptr || a.w == nullptr || !GemvSupports(a)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gemv: need 1 <= m <= ", kGemvMaxRows, ", k % 8 == 0, 16-byte aligned operands, "
        "ldc >= n (n / 2 and n even for kSiluMulBf16), fp32 output when accumulating; got m=",
        a.m, " n=", a.n, " k=", a.k, " ldc=", a.ldc));
  }
  // 4 rows per block was the fastest at m = 1 on every 8B decode shape (the benchmark's
  // "gemv_tilings" rows; docs/cuda_backend.md, session 4).
  if (tiling == GemvTiling::kAuto) tiling = GemvTiling::kRows4;
  // The fused SiLU·mul epilogue needs whole (gate, up) pairs in a block.
  if (a.output == GemmOutput::kSiluMulBf16 && tiling == GemvTiling::kRows1) {
    tiling = GemvTiling::kRows2;
  }
  switch (tiling) {
    case GemvTiling::kAuto:  // resolved above
    case GemvTiling::kRows1: LaunchRows<1>(a, stream); break;
    case GemvTiling::kRows2: LaunchRows<2>(a, stream); break;
    case GemvTiling::kRows4: LaunchRows<4>(a, stream); break;
    case GemvTiling::kRows8: LaunchRows<8>(a, stream); break;
  }
  return absl::OkStatus();
}

}  // namespace tandem
