#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/gemv.h"

namespace tandem {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerWarp = 2;  // weight rows (outputs) per warp
constexpr int kUnroll = 4;       // 16-byte chunks per row in flight per lane

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

// grid ceil(n / (kWarps * kRowsPerWarp)); up to kM activation rows (m <= kM at run time).
template <int kM>
__global__ void __launch_bounds__(kThreads) GemvKernel(GemmArgs args) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  if (n0 >= args.n) return;
  const int m = static_cast<int>(args.m);
  const int64_t k = args.k, chunks = k / 8;
  const __nv_bfloat16* w_rows[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    w_rows[r] = args.w + min(n0 + r, args.n - 1) * k;  // a row past n re-reads the last one
  }
  float acc[kRowsPerWarp][kM];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < kM; ++i) acc[r][i] = 0.0f;
  }

  for (int64_t base = lane; base < chunks; base += 32 * kUnroll) {
    uint4 w_raw[kUnroll][kRowsPerWarp];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + 32 * u;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        w_raw[u][r] = c < chunks ? LoadStreaming(w_rows[r] + c * 8) : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + 32 * u;
      if (c >= chunks) break;
      float w_f[kRowsPerWarp][8];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) Widen8(w_raw[u][r], w_f[r]);
#pragma unroll
      for (int i = 0; i < kM; ++i) {
        if (i >= m) break;
        float a_f[8];
        Widen8(__ldg(reinterpret_cast<const uint4*>(args.a + i * k + c * 8)), a_f);
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[r][i] = fmaf(w_f[r][e], a_f[e], acc[r][i]);
        }
      }
    }
  }

  const int64_t ldc = args.ldc == 0 ? args.n : args.ldc;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int i = 0; i < kM; ++i) {
      const float sum = cuda_kernels::WarpSum(acc[r][i]);
      if (lane != (r * kM + i) % 32 || i >= m || n0 + r >= args.n) continue;
      const int64_t at = i * ldc + n0 + r;
      if (args.output == GemmOutput::kBF16) {
        static_cast<__nv_bfloat16*>(args.out)[at] = __float2bfloat16(sum);
      } else if (args.accumulate) {
        static_cast<float*>(args.out)[at] += sum;
      } else {
        static_cast<float*>(args.out)[at] = sum;
      }
    }
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

bool GemvSupports(const GemmArgs& a) {
  return a.m >= 1 && a.m <= kGemvMaxRows && a.n > 0 && a.k > 0 && a.k % 8 == 0 &&
         Aligned16(a.a) && Aligned16(a.w) && a.out != nullptr &&
         (a.ldc == 0 || a.ldc >= a.n) && (!a.accumulate || a.output == GemmOutput::kF32);
}

absl::Status LaunchGemv(const GemmArgs& a, cudaStream_t stream) {
  if (a.a == nullptr || a.w == nullptr || !GemvSupports(a)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gemv: need 1 <= m <= ", kGemvMaxRows, ", k % 8 == 0, 16-byte aligned operands, "
        "ldc >= n, fp32 output when accumulating; got m=", a.m, " n=", a.n, " k=", a.k));
  }
  const int64_t rows_per_block = kWarps * kRowsPerWarp;
  const unsigned blocks = static_cast<unsigned>((a.n + rows_per_block - 1) / rows_per_block);
  if (a.m == 1) {
    GemvKernel<1><<<blocks, kThreads, 0, stream>>>(a);
  } else if (a.m == 2) {
    GemvKernel<2><<<blocks, kThreads, 0, stream>>>(a);
  } else if (a.m <= 4) {
    GemvKernel<4><<<blocks, kThreads, 0, stream>>>(a);
  } else {
    GemvKernel<8><<<blocks, kThreads, 0, stream>>>(a);
  }
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace tandem
