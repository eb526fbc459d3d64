#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/mma.cuh"
#include "common/backend/cuda/kernels/prefill_attention.h"

namespace tandem {
namespace {

using cuda_kernels::CpAsync16;
using cuda_kernels::CpAsyncCommit;
using cuda_kernels::CpAsyncWait;
using cuda_kernels::LdMatrixX4;
using cuda_kernels::LdMatrixX4Trans;
using cuda_kernels::MmaBf16;
using cuda_kernels::PackBf16x2;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kKvTile = 64;  // tokens per K/V tile
static_assert(kPrefillRowsPerTile == 16 * kWarps, "one 16-row mma tile per warp");

template <int kDim>
constexpr int kRow = kDim + 8;  // padded shared rows: conflict-free ldmatrix

template <int kDim>
constexpr size_t SharedBytes() {
  // 2 stages of k [64][row] and v [64][row]; Q passes through stage 1's k before the loop
  return sizeof(__nv_bfloat16) * kRow<kDim> * 4 * kKvTile;
}

// Gathers tokens [tile_begin, tile_begin + 64) of one kv head into shared rows; tokens past
// `end` are zero-filled (and masked by the caller).
template <int kDim>
__device__ __forceinline__ void LoadKvTile(const PrefillAttentionArgs& a, const int32_t* table,
                                           int kv_head, int tile_begin, int end,
                                           __nv_bfloat16* k_s, __nv_bfloat16* v_s) {
  // Each thread owns one 16-byte column (part) of every 8th (D = 128) token row: the
  // address arithmetic and block-table lookups are per row, not per chunk.
  constexpr int kChunks = kDim / 8, kRowsPerPass = kThreads / kChunks;
  const int bs = a.cache.block_size, part = threadIdx.x % kChunks;
  const int64_t token_stride = static_cast<int64_t>(a.cache.num_kv_heads) * kDim;
  const int64_t column = static_cast<int64_t>(kv_head) * kDim + part * 8;
#pragma unroll
  for (int i = 0; i < kKvTile / kRowsPerPass; ++i) {
    const int j = threadIdx.x / kChunks + i * kRowsPerPass, pos = tile_begin + j;
    const bool valid = pos < end;
    const int64_t slot = valid ? static_cast<int64_t>(table[pos / bs]) * bs + pos % bs : 0;
    const int64_t offset = slot * token_stride + column;
    CpAsync16(k_s + j * kRow<kDim> + part * 8, a.cache.k + offset, valid);
    CpAsync16(v_s + j * kRow<kDim> + part * 8, a.cache.v + offset, valid);
  }
}

// grid (num_kv_heads, num_tiles); tiles run longest first (causal work grows with the row).
template <int kDim>
__global__ void __launch_bounds__(kThreads, 3) PrefillAttentionKernel(PrefillAttentionArgs a,
                                                                      float scale_log2) {
  constexpr int R = kRow<kDim>;
  constexpr int kSteps = kDim / 16;   // k-steps of S = Q·Kᵀ
  constexpr int kDimTiles = kDim / 8;  // n-tiles of O
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(shared_raw);  // [2][64][R]
  __nv_bfloat16* v_s = k_s + 2 * kKvTile * R;                           // [2][64][R]
  __nv_bfloat16* q_s = k_s + kKvTile * R;  // stage 1's k, until the loop starts

  const int tile = a.num_tiles - 1 - blockIdx.y;
  const int seq = a.tiles[2 * tile], row_begin = a.tiles[2 * tile + 1];
  const int kv_head = blockIdx.x;
  const int group = a.num_heads / a.cache.num_kv_heads;
  const int token_begin = a.query_start[seq];
  const int total_rows = (a.query_start[seq + 1] - token_begin) * group;
  const int num_rows = min(kPrefillRowsPerTile, total_rows - row_begin);
  const int first_position = a.positions[token_begin];
  const int max_position = first_position + (row_begin + num_rows - 1) / group;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;

  // Q rows (zero past num_rows), then the first K/V tile.
  for (int c = threadIdx.x; c < kPrefillRowsPerTile * (kDim / 8); c += kThreads) {
    const int r = c / (kDim / 8), part = c % (kDim / 8);
    const bool valid = r < num_rows;
    int64_t offset = 0;
    if (valid) {
      const int64_t token = token_begin + (row_begin + r) / group;
      const int head = kv_head * group + (row_begin + r) % group;
      offset = (token * a.num_heads + head) * kDim + part * 8;
    }
    CpAsync16(q_s + r * R + part * 8, a.q + offset, valid);
  }
  const int num_kv_tiles = max_position / kKvTile + 1;
  LoadKvTile<kDim>(a, table, kv_head, 0, max_position + 1, k_s, v_s);
  CpAsyncCommit();

  // This thread's two rows (warp * 16 + g and + 8) and their positions; rows past num_rows
  // take the last valid row's position (computed, never written).
  const int row0 = warp * 16 + g, row1 = row0 + 8;
  const int pos0 = first_position + (row_begin + min(row0, num_rows - 1)) / group;
  const int pos1 = first_position + (row_begin + min(row1, num_rows - 1)) / group;
  const int warp_last = first_position + (row_begin + min(warp * 16 + 15, num_rows - 1)) / group;
  const int warp_first = first_position + (row_begin + min(warp * 16, num_rows - 1)) / group;
  const bool warp_active = warp * 16 < num_rows;

  uint32_t q_frag[kSteps][4];
  CpAsyncWait<0>();
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
    LdMatrixX4(q_frag[kk], q_s + (warp * 16 + lane % 16) * R + kk * 16 + (lane / 16) * 8);
  }
  __syncthreads();  // q_s (stage 1's k) is free for tile 1
  float o[kDimTiles][4];
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  for (int kt = 0; kt < num_kv_tiles; ++kt) {
    const int stage = kt & 1;
    if (kt + 1 < num_kv_tiles) {
      LoadKvTile<kDim>(a, table, kv_head, (kt + 1) * kKvTile, max_position + 1,
                       k_s + (stage ^ 1) * kKvTile * R, v_s + (stage ^ 1) * kKvTile * R);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    const int tile_begin = kt * kKvTile;
    if (warp_active && tile_begin <= warp_last) {
      const __nv_bfloat16* k_tile = k_s + stage * kKvTile * R;
      const __nv_bfloat16* v_tile = v_s + stage * kKvTile * R;
      float s[kKvTile / 8][4];
#pragma unroll
      for (int j = 0; j < kKvTile / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
#pragma unroll
        for (int np = 0; np < kKvTile / 16; ++np) {
          uint32_t b[4];
          LdMatrixX4(b, k_tile + (np * 16 + lane % 8 + (lane / 16) * 8) * R + kk * 16 +
                            ((lane / 8) % 2) * 8);
          MmaBf16(s[2 * np], q_frag[kk], b[0], b[1]);
          MmaBf16(s[2 * np + 1], q_frag[kk], b[2], b[3]);
        }
      }
      // Causal mask (only tiles that reach past the warp's first row need it), then the
      // online softmax on raw scores: p = 2^(s * scale_log2 - m * scale_log2), one FFMA and
      // one exp2 per score.
      if (tile_begin + kKvTile - 1 > warp_first) {
#pragma unroll
        for (int j = 0; j < kKvTile / 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int token = tile_begin + j * 8 + 2 * t + (e & 1);
            if (token > (e < 2 ? pos0 : pos1)) s[j][e] = -INFINITY;
          }
        }
      }
      float tile_max0 = -INFINITY, tile_max1 = -INFINITY;
#pragma unroll
      for (int j = 0; j < kKvTile / 8; ++j) {
        tile_max0 = fmaxf(tile_max0, fmaxf(s[j][0], s[j][1]));
        tile_max1 = fmaxf(tile_max1, fmaxf(s[j][2], s[j][3]));
      }
      const float new0 = fmaxf(m0, cuda_kernels::QuadMax(tile_max0));
      const float new1 = fmaxf(m1, cuda_kernels::QuadMax(tile_max1));
      const float use0 = new0 == -INFINITY ? 0.0f : new0;
      const float use1 = new1 == -INFINITY ? 0.0f : new1;
      const float alpha0 = exp2f((m0 - use0) * scale_log2);
      const float alpha1 = exp2f((m1 - use1) * scale_log2);
      const float offset0 = -use0 * scale_log2, offset1 = -use1 * scale_log2;
      m0 = new0;
      m1 = new1;
      float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
      for (int j = 0; j < kKvTile / 8; ++j) {
        s[j][0] = exp2f(fmaf(s[j][0], scale_log2, offset0));
        s[j][1] = exp2f(fmaf(s[j][1], scale_log2, offset0));
        s[j][2] = exp2f(fmaf(s[j][2], scale_log2, offset1));
        s[j][3] = exp2f(fmaf(s[j][3], scale_log2, offset1));
        sum0 += s[j][0] + s[j][1];
        sum1 += s[j][2] + s[j][3];
      }
      l0 = l0 * alpha0 + sum0;  // per-thread partial sums; the quad is summed at the end
      l1 = l1 * alpha1 + sum1;
#pragma unroll
      for (int d = 0; d < kDimTiles; ++d) {
        o[d][0] *= alpha0;
        o[d][1] *= alpha0;
        o[d][2] *= alpha1;
        o[d][3] *= alpha1;
      }
#pragma unroll
      for (int ks = 0; ks < kKvTile / 16; ++ks) {
        const uint32_t p[4] = {PackBf16x2(s[2 * ks][0], s[2 * ks][1]),
                               PackBf16x2(s[2 * ks][2], s[2 * ks][3]),
                               PackBf16x2(s[2 * ks + 1][0], s[2 * ks + 1][1]),
                               PackBf16x2(s[2 * ks + 1][2], s[2 * ks + 1][3])};
#pragma unroll
        for (int dp = 0; dp < kDim / 16; ++dp) {
          uint32_t b[4];
          LdMatrixX4Trans(b, v_tile + (ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * R +
                                 dp * 16 + (lane / 16) * 8);
          MmaBf16(o[2 * dp], p, b[0], b[1]);
          MmaBf16(o[2 * dp + 1], p, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // this stage is consumed before the next iteration refills it
  }

  l0 = cuda_kernels::QuadSum(l0);
  l1 = cuda_kernels::QuadSum(l1);
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half == 0 ? row0 : row1;
    if (r >= num_rows) continue;
    const int64_t token = token_begin + (row_begin + r) / group;
    const int head = kv_head * group + (row_begin + r) % group;
    __nv_bfloat16* out = a.out + (token * a.num_heads + head) * kDim + 2 * t;
    const float inv = half == 0 ? inv0 : inv1;
#pragma unroll
    for (int d = 0; d < kDimTiles; ++d) {
      *reinterpret_cast<__nv_bfloat162*>(out + d * 8) =
          __floats2bfloat162_rn(o[d][2 * half] * inv, o[d][2 * half + 1] * inv);
    }
  }
}

template <int kDim>
void Launch(const PrefillAttentionArgs& a, cudaStream_t stream) {
  constexpr size_t kShared = SharedBytes<kDim>();
  static const cudaError_t attribute = cudaFuncSetAttribute(
      PrefillAttentionKernel<kDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(kShared));
  TANDEM_CUDA_CHECK(attribute);
  const float scale_log2 = a.scale * 1.4426950408889634f;
  dim3 grid(a.cache.num_kv_heads, a.num_tiles);
  PrefillAttentionKernel<kDim><<<grid, kThreads, kShared, stream>>>(a, scale_log2);
  TANDEM_CUDA_CHECK_LAUNCH();
}

}  // namespace

std::vector<int32_t> BuildPrefillTiles(const int32_t* query_start, int32_t num_seqs,
                                       int32_t group) {
  std::vector<int32_t> tiles;
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t rows = (query_start[s + 1] - query_start[s]) * group;
    for (int32_t r = 0; r < rows; r += kPrefillRowsPerTile) {
      tiles.push_back(s);
      tiles.push_back(r);
    }
  }
  return tiles;
}

absl::Status LaunchPrefillAttention(const PrefillAttentionArgs& a, cudaStream_t stream) {
  const PagedKvCache& c = a.cache;
  if (a.num_tiles < 0 || a.num_heads <= 0 || c.num_kv_heads <= 0 ||
      a.num_heads % c.num_kv_heads != 0 || c.block_size <= 0 || a.max_blocks_per_seq <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefill_attention: need num_heads a positive multiple of num_kv_heads and positive "
        "block sizes; got ", a.num_heads, ", ", c.num_kv_heads, ", ", c.block_size, ", ",
        a.max_blocks_per_seq));
  }
  if (c.head_dim != 32 && c.head_dim != 64 && c.head_dim != 128) {
    return absl::UnimplementedError(
        absl::StrCat("prefill_attention: head_dim must be 32, 64 or 128, got ", c.head_dim));
  }
  if (a.num_tiles == 0) return absl::OkStatus();
  if (a.q == nullptr || a.out == nullptr || a.positions == nullptr ||
      a.query_start == nullptr || a.block_tables == nullptr || a.tiles == nullptr ||
      c.k == nullptr || c.v == nullptr) {
    return absl::InvalidArgumentError("prefill_attention: null pointer");
  }
  switch (c.head_dim) {
    case 32: Launch<32>(a, stream); break;
    case 64: Launch<64>(a, stream); break;
    default: Launch<128>(a, stream); break;
  }
  return absl::OkStatus();
}

}  // namespace tandem
