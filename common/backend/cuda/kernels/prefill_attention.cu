#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/prefill_attention.h"

namespace tandem {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kPrefillRowsPerTile / kWarps;
constexpr int kKvTile = 64;

// grid (num_tiles, num_kv_heads). Each warp owns 8 query rows; lanes split the tile's keys
// for the scores and the head dimensions for the output.
template <int kDim>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(PrefillAttentionArgs a) {
  constexpr int kRow = kDim + 8;  // padded: conflict-free 16-byte reads of different rows
  constexpr int kDimsPerLane = kDim / 32;
  __shared__ __align__(16) __nv_bfloat16 k_tile[kKvTile * kRow];
  __shared__ __align__(16) __nv_bfloat16 v_tile[kKvTile * kRow];
  __shared__ __align__(16) __nv_bfloat16 q_s[kPrefillRowsPerTile * kDim];  // unscaled
  __shared__ float p_s[kWarps][kKvTile];

  const int seq = a.tiles[2 * blockIdx.x], row_begin = a.tiles[2 * blockIdx.x + 1];
  const int kv_head = blockIdx.y;
  const int group = a.num_heads / a.cache.num_kv_heads;
  const int token_begin = a.query_start[seq];
  const int total_rows = (a.query_start[seq + 1] - token_begin) * group;
  const int num_rows = min(kPrefillRowsPerTile, total_rows - row_begin);
  const int first_position = a.positions[token_begin];
  const int max_position = first_position + (row_begin + num_rows - 1) / group;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int i = threadIdx.x; i < num_rows * kDim; i += kThreads) {
    const int r = row_begin + i / kDim;
    const int64_t token = token_begin + r / group;
    const int head = kv_head * group + r % group;
    q_s[i] = a.q[(token * a.num_heads + head) * kDim + i % kDim];
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) acc[rr][e] = 0.0f;
  }

  const int bs = a.cache.block_size;
  for (int tile_begin = 0; tile_begin <= max_position; tile_begin += kKvTile) {
    const int n = min(kKvTile, max_position + 1 - tile_begin);
    __syncthreads();  // previous tile fully consumed (and q_s written, first time)
    for (int c = threadIdx.x; c < n * (kDim / 8); c += kThreads) {
      const int j = c / (kDim / 8), part = c % (kDim / 8), pos = tile_begin + j;
      const int64_t slot = static_cast<int64_t>(table[pos / bs]) * bs + pos % bs;
      const int64_t offset = (slot * a.cache.num_kv_heads + kv_head) * kDim + part * 8;
      *reinterpret_cast<uint4*>(k_tile + j * kRow + part * 8) =
          *reinterpret_cast<const uint4*>(a.cache.k + offset);
      *reinterpret_cast<uint4*>(v_tile + j * kRow + part * 8) =
          *reinterpret_cast<const uint4*>(a.cache.v + offset);
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;  // row within the tile
      if (r >= num_rows) break;                // warp-uniform
      const int row_position = first_position + (row_begin + r) / group;
      const __nv_bfloat16* q_row = q_s + r * kDim;
      float s[2];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int j = lane + 32 * half;
        s[half] = -INFINITY;
        if (j < n && tile_begin + j <= row_position) {
          float dot = 0.0f;
#pragma unroll
          for (int part = 0; part < kDim / 8; ++part) {
            float k8[8], q8[8];
            cuda_kernels::LoadBf16x8(k_tile + j * kRow + part * 8, k8);
            cuda_kernels::LoadBf16x8(q_row + part * 8, q8);
#pragma unroll
            for (int e = 0; e < 8; ++e) dot += q8[e] * k8[e];
          }
          s[half] = dot * a.scale;
        }
      }
      const float tile_max = cuda_kernels::WarpMax(fmaxf(s[0], s[1]));
      if (tile_max == -INFINITY) continue;  // every key of this tile is in the row's future
      const float m_new = fmaxf(m[rr], tile_max);
      const float alpha = expf(m[rr] - m_new);
      const float p0 = expf(s[0] - m_new), p1 = expf(s[1] - m_new);
      l[rr] = l[rr] * alpha + cuda_kernels::WarpSum(p0 + p1);
      m[rr] = m_new;
      p_s[warp][lane] = p0;
      p_s[warp][lane + 32] = p1;
      __syncwarp();
#pragma unroll
      for (int e = 0; e < kDimsPerLane; ++e) acc[rr][e] *= alpha;
      const int last = min(n, row_position - tile_begin + 1);
      for (int j = 0; j < last; ++j) {
        const float p = p_s[warp][j];
        const __nv_bfloat16* v = v_tile + j * kRow + lane * kDimsPerLane;
#pragma unroll
        for (int e = 0; e < kDimsPerLane; ++e) acc[rr][e] += p * __bfloat162float(v[e]);
      }
      __syncwarp();
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr;
    if (r >= num_rows) break;
    const int64_t token = token_begin + (row_begin + r) / group;
    const int head = kv_head * group + (row_begin + r) % group;
    __nv_bfloat16* out = a.out + (token * a.num_heads + head) * kDim + lane * kDimsPerLane;
    const float inv_sum = 1.0f / l[rr];
#pragma unroll
    for (int e = 0; e < kDimsPerLane; ++e) out[e] = __float2bfloat16(acc[rr][e] * inv_sum);
  }
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
  dim3 grid(a.num_tiles, c.num_kv_heads);
  switch (c.head_dim) {
    case 32: PrefillAttentionKernel<32><<<grid, kThreads, 0, stream>>>(a); break;
    case 64: PrefillAttentionKernel<64><<<grid, kThreads, 0, stream>>>(a); break;
    default: PrefillAttentionKernel<128><<<grid, kThreads, 0, stream>>>(a); break;
  }
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace tandem
