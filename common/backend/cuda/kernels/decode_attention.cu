#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/decode_attention.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/mma.cuh"

namespace tandem {
namespace {

using cuda_kernels::LdMatrixX4;
using cuda_kernels::LdMatrixX4Trans;
using cuda_kernels::MmaBf16;
using cuda_kernels::PackBf16x2;

// Blocks of 4 warps (64-token tiles) everywhere but single-split launches with more blocks
// than two per SM, which run blocks of 2 warps (32-token tiles, half the shared memory): four
// fit per SM, so e.g. batch 64 x 8 kv heads (512 blocks) is one wave instead of two.
constexpr int kClusterWarps = 4;
constexpr int kTileTokens = 16 * kClusterWarps;  // the split planner's granularity
constexpr int kStages = 3;
constexpr int kMaxGroup = 16;
constexpr int kSplitBlocks = 132;  // one block per SM of the H200 (the session-4 sweep)
constexpr int kPortableClusterSize = 8;
constexpr int kLargeClusterSize = 16;  // non-portable; used where the device schedules it

template <int kDim>
constexpr int kRow = kDim + 8;  // padded shared rows: conflict-free ldmatrix

// After the tile loop the shared memory holds the per-warp merge area ([warps][16][kDim]
// outputs, [warps][16] maxes and sums) followed by this block's partial result ([16][kDim]
// outputs, [16] maxes and sums), which the other blocks of its cluster read.
template <int kDim, int kWarps>
constexpr size_t kMergeFloats = static_cast<size_t>(kWarps) * kMaxGroup * (kDim + 2);
template <int kDim>
constexpr size_t kPartialFloats = static_cast<size_t>(kMaxGroup) * (kDim + 2);

template <int kDim, int kWarps>
__host__ __device__ constexpr size_t TileAndMergeBytes() {
  const size_t tiles = sizeof(__nv_bfloat16) * 2 * kStages * 16 * kWarps * kRow<kDim>;
  const size_t merge = sizeof(float) * (kMergeFloats<kDim, kWarps> + kPartialFloats<kDim>);
  return tiles > merge ? tiles : merge;
}

// The tiles (or, after the loop, the merge area), then the fused RoPE's D/2 cos and D/2 sin,
// each warp's kStages mbarriers and the new token's rotated K and V rows.
template <int kDim, int kWarps>
constexpr size_t SharedBytes() {
  return TileAndMergeBytes<kDim, kWarps>() + sizeof(float) * kDim +
         sizeof(uint64_t) * kWarps * kStages + sizeof(__nv_bfloat16) * 2 * kDim;
}

// A warp fetches its own 16 tokens of a tile (K rows from lanes 0-15, V rows from lanes
// 16-31, one 2 * kDim-byte bulk copy each, the slot looked up per lane) into its rows of one
// stage, completing on that stage's mbarrier; rows past `end` are zero-filled by ordinary
// stores instead. Nothing is issued for a slice that starts at or past `end` (its consumer
// skips it too).
template <int kDim, int kWarps>
__device__ __forceinline__ void LoadWarpSlice(const DecodeAttentionArgs& a, const int32_t* table,
                                              int kv_head, int slice_first, int end, int lane,
                                              __nv_bfloat16* k_stage, __nv_bfloat16* v_stage,
                                              uint64_t* bar) {
  if (slice_first >= end) return;
  constexpr int kRowBytes = kDim * 2;
  const int valid = min(16, end - slice_first);
  if (lane == 0) cuda_kernels::MbarrierArriveExpectTx(bar, 2 * valid * kRowBytes);
  __syncwarp();
  const int token = lane % 16, pos = slice_first + token;
  __nv_bfloat16* row = (lane < 16 ? k_stage : v_stage) + token * kRow<kDim>;
  if (token < valid) {
    const int bs = a.cache.block_size;
    const int64_t slot = static_cast<int64_t>(table[pos / bs]) * bs + pos % bs;
    const int64_t offset = (slot * a.cache.num_kv_heads + kv_head) * kDim;
    cuda_kernels::BulkCopyToShared(row, (lane < 16 ? a.cache.k : a.cache.v) + offset, kRowBytes,
                                   bar);
  } else {
#pragma unroll
    for (int c = 0; c < kDim / 8; ++c) reinterpret_cast<uint4*>(row)[c] = make_uint4(0, 0, 0, 0);
    cuda_kernels::FenceProxyAsyncShared();  // before a later copy refills this stage
  }
}

// grid (num_kv_heads, num_seqs, num_splits); with num_splits > 1 the splits of one (kv head,
// sequence) are one thread-block cluster (dims 1 x 1 x num_splits) and combine their partial
// results through distributed shared memory.
template <int kDim, int kWarps>
__global__ void __launch_bounds__(kWarps * 32) DecodeAttentionKernel(DecodeAttentionArgs a,
                                                                     float scale_log2) {
  constexpr int kThreads = 32 * kWarps, kTileTokens = 16 * kWarps;  // 16 tokens per warp
  constexpr int R = kRow<kDim>;
  constexpr int kSteps = kDim / 16;
  constexpr int kDimTiles = kDim / 8;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __nv_bfloat16* k_s = reinterpret_cast<__nv_bfloat16*>(shared_raw);  // [stages][64][R]
  __nv_bfloat16* v_s = k_s + kStages * kTileTokens * R;                // [stages][64][R]

  const int kv_head = blockIdx.x, seq = blockIdx.y, split = blockIdx.z;
  const int num_splits = gridDim.z;
  const int group = a.num_heads / a.cache.num_kv_heads;
  const int first_head = kv_head * group;
  const int context = a.context_lens[seq];
  const int split_tokens =
      ((context + num_splits - 1) / num_splits + kTileTokens - 1) / kTileTokens * kTileTokens;
  const int begin = split * split_tokens;
  const int end = min(context, begin + split_tokens);
  const int num_tiles = end > begin ? (end - begin + kTileTokens - 1) / kTileTokens : 0;
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  constexpr int kHalf = kDim / 2;
  const bool fused = a.qkv != nullptr;
  constexpr size_t kAnglesOffset = TileAndMergeBytes<kDim, kWarps>();
  float* cos_s = reinterpret_cast<float*>(shared_raw + kAnglesOffset);  // [kHalf]
  float* sin_s = cos_s + kHalf;                                         // [kHalf]
  // This warp's kStages mbarriers (of [warps][kStages]), then the new token's K and V rows.
  uint64_t* bars = reinterpret_cast<uint64_t*>(sin_s + kHalf) + warp * kStages;
  __nv_bfloat16* new_row_s = reinterpret_cast<__nv_bfloat16*>(
      reinterpret_cast<uint64_t*>(sin_s + kHalf) + kWarps * kStages);  // [2][kDim]
  if (lane == 0) {
#pragma unroll
    for (int st = 0; st < kStages; ++st) cuda_kernels::MbarrierInit(&bars[st], 1);
    cuda_kernels::FenceMbarrierInit();
  }
  __syncwarp();
  const int64_t warp_row = static_cast<int64_t>(warp) * 16 * R;  // the warp's rows in a stage
  if (fused && threadIdx.x < kHalf) {
    // The step's angles: positions and inv_freq are inputs of the whole pass, not of the
    // previous kernel, so this overlaps it.
    const float position = static_cast<float>(a.positions[seq]);
    sincosf(position * a.inv_freq[threadIdx.x], &sin_s[threadIdx.x], &cos_s[threadIdx.x]);
  }
  // Launched as a programmatic dependent: everything above overlapped the previous kernel
  // (the QKV GEMM, or RoPE + KV write unfused, which write this step's q and K/V); nothing
  // below may start before it is done. No early trigger for the next kernel: letting the o
  // projection's GEMV stream its weights during attention made the batch-1 step 0.24 ms
  // slower (docs/cuda_backend.md).
  cuda_kernels::WaitForPreviousGrid();

  // Each warp loads and consumes its own 16 tokens of every tile: no block barrier in the
  // loop. The first kStages - 1 tiles are requested here.
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < num_tiles) {
      LoadWarpSlice<kDim, kWarps>(a, table, kv_head, begin + st * kTileTokens + warp * 16, end,
                                  lane, k_s + st * kTileTokens * R + warp_row,
                                  v_s + st * kTileTokens * R + warp_row, &bars[st]);
    }
  }

  // Fused RoPE: this step's token (position context - 1) is rotated here; the block whose
  // range holds it writes its K and V to the cache and keeps them in shared memory for the
  // warp whose slice holds that token (the bulk copy of that row may read the slot before
  // or after the write, so the warp overwrites the row once it has landed).
  const int new_token = context - 1;
  const bool owns_new = fused && new_token >= begin && new_token < end;
  // Item x < D/2: k pair (x, x + D/2), rotated; D/2 <= x < D: v pair (2x - D, 2x - D + 1).
  constexpr int kNewItems = (kDim + kThreads - 1) / kThreads;
  const int64_t qkv_row = static_cast<int64_t>(seq) * (a.num_heads + 2 * a.cache.num_kv_heads) *
                          kDim;
  if (fused) __syncthreads();  // the angles
  if (owns_new) {
    const int64_t slot = a.slot_mapping[seq];
    const bool write = slot >= 0 && slot < a.cache.num_slots;
    const int64_t cache_row = (slot * a.cache.num_kv_heads + kv_head) * kDim;
    const __nv_bfloat16* k = a.qkv + qkv_row + static_cast<int64_t>(a.num_heads + kv_head) * kDim;
    const __nv_bfloat16* v = k + static_cast<int64_t>(a.cache.num_kv_heads) * kDim;
#pragma unroll
    for (int n = 0; n < kNewItems; ++n) {
      const int x = threadIdx.x + n * kThreads;
      if (x < kHalf) {
        float first, second;
        cuda_kernels::RopeRotate(__bfloat162float(k[x]), __bfloat162float(k[x + kHalf]),
                                 cos_s[x], sin_s[x], first, second);
        const __nv_bfloat162 rotated = __floats2bfloat162_rn(first, second);
        new_row_s[x] = rotated.x;
        new_row_s[x + kHalf] = rotated.y;
        if (write) {
          a.cache.k[cache_row + x] = rotated.x;
          a.cache.k[cache_row + x + kHalf] = rotated.y;
        }
      } else if (x < kDim) {
        const int j = 2 * (x - kHalf);
        const __nv_bfloat162 value = *reinterpret_cast<const __nv_bfloat162*>(v + j);
        *reinterpret_cast<__nv_bfloat162*>(new_row_s + kDim + j) = value;
        if (write) *reinterpret_cast<__nv_bfloat162*>(a.cache.v + cache_row + j) = value;
      }
    }
  }
  if (fused) __syncthreads();  // new_row_s

  // The group's query rows g and g + 8 as A fragments (rows >= group are zero), rotated
  // here when fused: columns c and c + D/2 are fragments kk and kk + kSteps / 2 of a thread.
  uint32_t q_frag[kSteps][4];
  if (fused) {
    const __nv_bfloat16* q = a.qkv + qkv_row + static_cast<int64_t>(first_head) * kDim;
#pragma unroll
    for (int kk = 0; kk < kSteps / 2; ++kk) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = g + (i % 2) * 8, col = kk * 16 + (i / 2) * 8 + 2 * t;
        if (r >= group) {
          q_frag[kk][i] = q_frag[kk + kSteps / 2][i] = 0u;
          continue;
        }
        const float2 x = __bfloat1622float2(
            *reinterpret_cast<const __nv_bfloat162*>(q + r * kDim + col));
        const float2 y = __bfloat1622float2(
            *reinterpret_cast<const __nv_bfloat162*>(q + r * kDim + col + kHalf));
        float first0, second0, first1, second1;
        cuda_kernels::RopeRotate(x.x, y.x, cos_s[col], sin_s[col], first0, second0);
        cuda_kernels::RopeRotate(x.y, y.y, cos_s[col + 1], sin_s[col + 1], first1, second1);
        q_frag[kk][i] = PackBf16x2(first0, first1);
        q_frag[kk + kSteps / 2][i] = PackBf16x2(second0, second1);
      }
    }
  } else {
    const __nv_bfloat16* q =
        a.q + (static_cast<int64_t>(seq) * a.num_heads + first_head) * kDim;
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = g + (i % 2) * 8, col = kk * 16 + (i / 2) * 8 + 2 * t;
        q_frag[kk][i] = r < group ? *reinterpret_cast<const uint32_t*>(q + r * kDim + col) : 0u;
      }
    }
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  for (int kt = 0; kt < num_tiles; ++kt) {
    // Refill the stage this warp consumed last iteration (every lane is past its reads).
    __syncwarp();
    const int next = kt + kStages - 1;
    if (next < num_tiles) {
      const int st = next % kStages;
      LoadWarpSlice<kDim, kWarps>(a, table, kv_head, begin + next * kTileTokens + warp * 16, end,
                                  lane, k_s + st * kTileTokens * R + warp_row,
                                  v_s + st * kTileTokens * R + warp_row, &bars[st]);
    }
    const int first_token = begin + kt * kTileTokens + warp * 16;
    if (first_token < end) {
      const int stage = kt % kStages;
      __nv_bfloat16* k_rows = k_s + stage * kTileTokens * R + warp_row;
      __nv_bfloat16* v_rows = v_s + stage * kTileTokens * R + warp_row;
      cuda_kernels::MbarrierWait(&bars[stage], (kt / kStages) & 1);
      if (owns_new && new_token >= first_token && new_token < first_token + 16) {
        // The new token's row over what the copy brought: 16 bytes per lane, K then V.
        const int row = (new_token - first_token) * R;
        for (int c = lane; c < kDim / 4; c += 32) {
          const bool is_v = c >= kDim / 8;
          const int chunk = is_v ? c - kDim / 8 : c;
          reinterpret_cast<uint4*>((is_v ? v_rows : k_rows) + row)[chunk] =
              reinterpret_cast<const uint4*>(new_row_s + (is_v ? kDim : 0))[chunk];
        }
        cuda_kernels::FenceProxyAsyncShared();  // before a later copy refills this stage
        __syncwarp();
      }
      float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
      // Even and odd k-steps in separate accumulators: two dependent mma chains of kSteps / 2
      // per n-tile instead of one of kSteps (b64: 146.4 -> 145.0 us per layer).
      float s_odd[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
      for (int kk = 0; kk < kSteps; kk += 2) {
        uint32_t b[4], c[4];
        const __nv_bfloat16* k_row =
            k_rows + (lane % 8 + (lane / 16) * 8) * R + ((lane / 8) % 2) * 8;
        LdMatrixX4(b, k_row + kk * 16);
        LdMatrixX4(c, k_row + (kk + 1) * 16);
        MmaBf16(s[0], q_frag[kk], b[0], b[1]);
        MmaBf16(s[1], q_frag[kk], b[2], b[3]);
        MmaBf16(s_odd[0], q_frag[kk + 1], c[0], c[1]);
        MmaBf16(s_odd[1], q_frag[kk + 1], c[2], c[3]);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] += s_odd[j][e];
      }
      float max0 = -INFINITY, max1 = -INFINITY;
      const bool masked = first_token + 16 > end;  // only the range's last warp tile
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int token = first_token + j * 8 + 2 * t + (e & 1);
          s[j][e] = !masked || token < end ? s[j][e] * scale_log2 : -INFINITY;
        }
        max0 = fmaxf(max0, fmaxf(s[j][0], s[j][1]));
        max1 = fmaxf(max1, fmaxf(s[j][2], s[j][3]));
      }
      const float new0 = fmaxf(m0, cuda_kernels::QuadMax(max0));
      const float new1 = fmaxf(m1, cuda_kernels::QuadMax(max1));
      const float use0 = new0 == -INFINITY ? 0.0f : new0;
      const float use1 = new1 == -INFINITY ? 0.0f : new1;
      const float alpha0 = exp2f(m0 - use0), alpha1 = exp2f(m1 - use1);
      m0 = new0;
      m1 = new1;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        s[j][0] = exp2f(s[j][0] - use0);
        s[j][1] = exp2f(s[j][1] - use0);
        s[j][2] = exp2f(s[j][2] - use1);
        s[j][3] = exp2f(s[j][3] - use1);
      }
      l0 = l0 * alpha0 + s[0][0] + s[0][1] + s[1][0] + s[1][1];
      l1 = l1 * alpha1 + s[0][2] + s[0][3] + s[1][2] + s[1][3];
      const uint32_t p[4] = {PackBf16x2(s[0][0], s[0][1]), PackBf16x2(s[0][2], s[0][3]),
                             PackBf16x2(s[1][0], s[1][1]), PackBf16x2(s[1][2], s[1][3])};
      // Once the running maxima settle, most tiles leave them unchanged (alpha exactly 1)
      // and the 64 multiplies per thread are skipped.
      cuda_kernels::RescaleRows(o, alpha0, alpha1);
#pragma unroll
      for (int dp = 0; dp < kDim / 16; ++dp) {
        uint32_t b[4];
        LdMatrixX4Trans(b, v_rows + (lane % 8 + ((lane / 8) % 2) * 8) * R + dp * 16 +
                               (lane / 16) * 8);
        MmaBf16(o[2 * dp], p, b[0], b[1]);
        MmaBf16(o[2 * dp + 1], p, b[2], b[3]);
      }
    }
  }
  __syncthreads();  // every warp is done with its tiles before they become the merge area

  // Merge the warps (each saw different tokens) through shared memory.
  float* o_s = reinterpret_cast<float*>(shared_raw);  // [warps][16][kDim]
  float* m_s = o_s + kWarps * kMaxGroup * kDim;        // [warps][16]
  float* l_s = m_s + kWarps * kMaxGroup;               // [warps][16]
  float* part_o = o_s + kMergeFloats<kDim, kWarps>;            // [16][kDim], relative to part_m
  float* part_m = part_o + kMaxGroup * kDim;           // [16], log2 units
  float* part_l = part_m + kMaxGroup;                  // [16]
  l0 = cuda_kernels::QuadSum(l0);
  l1 = cuda_kernels::QuadSum(l1);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = g + 8 * half;
    if (r >= group) continue;
    float* row = o_s + (warp * kMaxGroup + r) * kDim + 2 * t;
#pragma unroll
    for (int d = 0; d < kDimTiles; ++d) {
      row[d * 8] = o[d][2 * half];
      row[d * 8 + 1] = o[d][2 * half + 1];
    }
    if (t == 0) {
      m_s[warp * kMaxGroup + r] = half == 0 ? m0 : m1;
      l_s[warp * kMaxGroup + r] = half == 0 ? l0 : l1;
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < group * kDim; idx += kThreads) {
    const int r = idx / kDim, d = idx % kDim;
    float block_max = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (l_s[w * kMaxGroup + r] > 0.0f) block_max = fmaxf(block_max, m_s[w * kMaxGroup + r]);
    }
    float sum = 0.0f, value = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float l = l_s[w * kMaxGroup + r];
      if (l <= 0.0f) continue;
      const float weight = exp2f(m_s[w * kMaxGroup + r] - block_max);
      sum += l * weight;
      value += o_s[(w * kMaxGroup + r) * kDim + d] * weight;
    }
    if (num_splits == 1) {
      const int64_t row = static_cast<int64_t>(seq) * a.num_heads + first_head + r;
      a.out[row * kDim + d] = __float2bfloat16(sum > 0.0f ? value / sum : 0.0f);
    } else {
      part_o[r * kDim + d] = value;
      if (d == 0) {
        part_m[r] = block_max;
        part_l[r] = sum;
      }
    }
  }
  if (num_splits == 1) return;

  // Combine the cluster's splits. A warp takes one query row and 32 of its dims: lane q
  // reads split q's max and sum, the warp reduces them to the global max and the split
  // scales 2^(max_q - max), then each lane sums its dim over the splits (all remote loads
  // issued together) and divides by the scaled sum.
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every partial written
  const int rank = static_cast<int>(cluster.block_rank());
  for (int unit = rank * kWarps + warp; unit < group * (kDim / 32); unit += num_splits * kWarps) {
    const int r = unit / (kDim / 32), d = (unit % (kDim / 32)) * 32 + lane;
    float split_max = -INFINITY, split_sum = 0.0f;
    if (lane < num_splits) {
      split_sum = cluster.map_shared_rank(part_l, lane)[r];
      split_max = split_sum > 0.0f ? cluster.map_shared_rank(part_m, lane)[r] : -INFINITY;
    }
    const float global_max = cuda_kernels::WarpMax(split_max);
    const float split_scale = split_sum > 0.0f ? exp2f(split_max - global_max) : 0.0f;
    const float total = cuda_kernels::WarpSum(split_sum * split_scale);
    float value = 0.0f;
#pragma unroll
    for (int q = 0; q < kLargeClusterSize; ++q) {
      const float scale = __shfl_sync(cuda_kernels::kFullMask, split_scale, q);
      // an empty split's partial output is 0 (no tokens): scale 0 keeps value finite
      if (q < num_splits) value += scale * cluster.map_shared_rank(part_o, q)[r * kDim + d];
    }
    const int64_t row = static_cast<int64_t>(seq) * a.num_heads + first_head + r;
    a.out[row * kDim + d] = __float2bfloat16(total > 0.0f ? value / total : 0.0f);
  }
  cluster.sync();  // no block leaves while another still reads its shared memory
}

// Sets a kernel's shared-memory attribute once.
template <int kDim, int kWarps>
void SetSharedAttribute() {
  static const bool done = [] {
    TANDEM_CUDA_CHECK(cudaFuncSetAttribute(DecodeAttentionKernel<kDim, kWarps>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(SharedBytes<kDim, kWarps>())));
    return true;
  }();
  (void)done;
}

// The largest cluster the device schedules with the (4-warp) kernel's shared memory: 16
// where the non-portable size fits (H100/H200), else the portable 8. Sets its attributes.
template <int kDim>
int32_t MaxClusterSize() {
  static const int32_t size = [] {
    auto* kernel = DecodeAttentionKernel<kDim, kClusterWarps>;
    SetSharedAttribute<kDim, kClusterWarps>();
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
        cudaSuccess) {
      (void)cudaGetLastError();
      return kPortableClusterSize;
    }
    cudaLaunchAttribute attribute;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = 1;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = kLargeClusterSize;
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(1, 1, kLargeClusterSize);
    config.blockDim = dim3(32 * kClusterWarps);
    config.dynamicSmemBytes = SharedBytes<kDim, kClusterWarps>();
    config.attrs = &attribute;
    config.numAttrs = 1;
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess ||
        clusters < 1) {
      (void)cudaGetLastError();
      return kPortableClusterSize;
    }
    return kLargeClusterSize;
  }();
  return size;
}

template <int kDim, int kWarps>
void Launch(const DecodeAttentionArgs& a, int32_t num_splits, cudaStream_t stream) {
  MaxClusterSize<kDim>();  // sets the 4-warp kernel's attributes once
  SetSharedAttribute<kDim, kWarps>();
  cudaLaunchAttribute attributes[3];
  attributes[0].id = cudaLaunchAttributeClusterDimension;
  attributes[0].val.clusterDim.x = 1;
  attributes[0].val.clusterDim.y = 1;
  attributes[0].val.clusterDim.z = static_cast<unsigned>(num_splits);
  // one block per SM where possible: the splits are there to use more SMs' bandwidth
  attributes[1].id = cudaLaunchAttributeClusterSchedulingPolicyPreference;
  attributes[1].val.clusterSchedulingPolicyPreference = cudaClusterSchedulingPolicySpread;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(a.cache.num_kv_heads, a.num_seqs, num_splits);
  config.blockDim = dim3(32 * kWarps);
  config.dynamicSmemBytes = SharedBytes<kDim, kWarps>();
  config.stream = stream;
  config.attrs = attributes;
  config.numAttrs = num_splits > 1 ? 2 : 0;
  // a programmatic dependent of the kernel before it (see the kernel's wait)
  attributes[config.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attributes[config.numAttrs].val.programmaticStreamSerializationAllowed = 1;
  config.numAttrs++;
  const float scale_log2 = a.scale * 1.4426950408889634f;
  TANDEM_CUDA_CHECK(
      cudaLaunchKernelEx(&config, DecodeAttentionKernel<kDim, kWarps>, a, scale_log2));
}

// 2-warp blocks for single-split launches of more than two blocks per SM (see kClusterWarps).
template <int kDim>
void LaunchFor(const DecodeAttentionArgs& a, int32_t num_splits, cudaStream_t stream) {
  int device = 0, sms = 0;
  TANDEM_CUDA_CHECK(cudaGetDevice(&device));
  TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t blocks = static_cast<int64_t>(a.num_seqs) * a.cache.num_kv_heads;
  if (num_splits == 1 && blocks > 2 * static_cast<int64_t>(sms)) {
    Launch<kDim, 2>(a, num_splits, stream);
  } else {
    Launch<kDim, kClusterWarps>(a, num_splits, stream);
  }
}

}  // namespace

int32_t DecodeAttentionMaxSplits() { return MaxClusterSize<128>(); }

int32_t DecodeAttentionNumSplits(int32_t num_seqs, int32_t num_kv_heads,
                                 int32_t max_context_len) {
  // Splits until every SM has one block: at batch 8 (64 kv heads) 2 splits ran 41.7 us,
  // 4 (two blocks on most SMs) 45.6 us, 8 42.6 us; at batch 1, 16 splits 10.9 us, 8 13.1 us.
  const int64_t blocks = std::max<int64_t>(1, static_cast<int64_t>(num_seqs) * num_kv_heads);
  const int32_t wanted = static_cast<int32_t>(kSplitBlocks / blocks);
  const int32_t max_useful = std::max(1, (max_context_len + kTileTokens - 1) / kTileTokens);
  return std::clamp(wanted, 1, std::min(max_useful, DecodeAttentionMaxSplits()));
}

absl::Status LaunchDecodeAttention(const DecodeAttentionArgs& a, cudaStream_t stream) {
  const PagedKvCache& c = a.cache;
  if (a.num_seqs < 0 || c.num_kv_heads <= 0 || a.num_heads % c.num_kv_heads != 0 ||
      a.num_heads / c.num_kv_heads > kMaxGroup || a.num_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode_attention: num_heads must be a multiple of num_kv_heads with a group of at "
        "most ", kMaxGroup, ", got ", a.num_heads, " and ", c.num_kv_heads));
  }
  if (c.head_dim != 32 && c.head_dim != 64 && c.head_dim != 128) {
    return absl::UnimplementedError(
        absl::StrCat("decode_attention: head_dim must be 32, 64 or 128, got ", c.head_dim));
  }
  if (a.num_seqs == 0) return absl::OkStatus();
  if (a.max_context_len <= 0 || c.block_size <= 0 ||
      static_cast<int64_t>(a.max_blocks_per_seq) * c.block_size < a.max_context_len) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode_attention: max_blocks_per_seq * block_size must cover max_context_len=",
        a.max_context_len));
  }
  if ((a.q == nullptr && a.qkv == nullptr) || a.out == nullptr || a.context_lens == nullptr ||
      a.block_tables == nullptr || c.k == nullptr || c.v == nullptr ||
      (a.qkv != nullptr &&
       (a.positions == nullptr || a.slot_mapping == nullptr || a.inv_freq == nullptr))) {
    return absl::InvalidArgumentError("decode_attention: null pointer");
  }
  if (a.num_splits < 0 || a.num_splits > DecodeAttentionMaxSplits()) {
    return absl::InvalidArgumentError(absl::StrCat("decode_attention: num_splits must be in [0, ",
                                                   DecodeAttentionMaxSplits(), "], got ",
                                                   a.num_splits));
  }
  const int32_t num_splits = a.num_splits > 0 ? a.num_splits
                                              : DecodeAttentionNumSplits(a.num_seqs, c.num_kv_heads,
                                                                         a.max_context_len);
  switch (c.head_dim) {
    case 32: LaunchFor<32>(a, num_splits, stream); break;
    case 64: LaunchFor<64>(a, num_splits, stream); break;
    default: LaunchFor<128>(a, num_splits, stream); break;
  }
  return absl::OkStatus();
}

}  // namespace tandem
