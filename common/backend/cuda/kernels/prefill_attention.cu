#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/mma.cuh"
#include "common/backend/cuda/kernels/prefill_attention.h"
#include "common/backend/cuda/kernels/tensor_map.h"
#include "common/status.h"

namespace tandem {
namespace {

using cuda_kernels::CpAsync16;
using cuda_kernels::CpAsyncCommit;
using cuda_kernels::CpAsyncWait;
using cuda_kernels::LdMatrixX4;
using cuda_kernels::LdMatrixX4Trans;
using cuda_kernels::MmaBf16;
using cuda_kernels::PackBf16x2;

constexpr int kKvTile = 64;  // tokens per K/V tile
constexpr int kKvNTiles = kKvTile / 8;  // n-tiles of S

template <int kDim>
constexpr int kRow = kDim + 8;  // padded shared rows: conflict-free ldmatrix

// One block shape: kWarps warps of kWarpTiles 16-row mma tiles each. With kQInRegs the Q
// fragments stay in registers (staged through stage 1 of the K/V buffers before the loop);
// otherwise Q keeps its own shared region and is re-read with ldmatrix per K/V tile.
template <int kDim, int kWarps, int kWarpTiles, bool kQInRegs, int kMinBlocks>
struct Shape {
  static constexpr int kDimSize = kDim, kTilesPerWarp = kWarpTiles;
  static constexpr bool kQRegs = kQInRegs;
  static constexpr int kMinBlocksPerSm = kMinBlocks;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRowsPerWarp = 16 * kWarpTiles;
  static constexpr int kTileRows = kWarps * kRowsPerWarp;
  static constexpr int R = kRow<kDim>;
  // [stage][K | V][64][R], then Q's own [kTileRows][R] unless it lives in registers
  static constexpr size_t kSharedBytes =
      sizeof(__nv_bfloat16) * R * (4 * kKvTile + (kQInRegs ? 0 : kTileRows));
  static_assert(!kQInRegs || kTileRows <= 2 * kKvTile, "Q is staged through stage 1");
};

// Gathers tokens [tile_begin, tile_begin + 64) of one kv head into shared rows; tokens past
// `end` are zero-filled (and masked by the caller). Each thread owns one 16-byte column
// (part) of kRowsPerThread consecutive token rows. When those rows always share a cache
// block (block_size = 2^block_shift >= kRowsPerThread; block_shift < 0 otherwise), one
// table lookup and shift serve them all; otherwise each row divides by block_size.
template <int kDim, int kThreads>
__device__ __forceinline__ void LoadKvTile(const PrefillAttentionArgs& a, const int32_t* table,
                                           int kv_head, int tile_begin, int end, int block_shift,
                                           __nv_bfloat16* k_s, __nv_bfloat16* v_s) {
  constexpr int kChunks = kDim / 8, kRowsPerThread = kKvTile * kChunks / kThreads;
  static_assert(kKvTile * kChunks % kThreads == 0, "whole rows per thread");
  const int bs = a.cache.block_size, part = threadIdx.x % kChunks;
  const int first_row = threadIdx.x / kChunks * kRowsPerThread, first_pos = tile_begin + first_row;
  const int64_t token_stride = static_cast<int64_t>(a.cache.num_kv_heads) * kDim;
  const int64_t column = static_cast<int64_t>(kv_head) * kDim + part * 8;
  __nv_bfloat16* k_row = k_s + first_row * kRow<kDim> + part * 8;
  __nv_bfloat16* v_row = v_s + first_row * kRow<kDim> + part * 8;
  if (block_shift >= 0) {
    const int64_t first_slot =
        first_pos < end ? (static_cast<int64_t>(table[first_pos >> block_shift]) << block_shift) +
                              (first_pos & (bs - 1))
                        : 0;
    const int64_t offset = first_slot * token_stride + column;
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const bool valid = first_pos + i < end;
      const int64_t row_offset = valid ? offset + i * token_stride : 0;
      CpAsync16(k_row + i * kRow<kDim>, a.cache.k + row_offset, valid);
      CpAsync16(v_row + i * kRow<kDim>, a.cache.v + row_offset, valid);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i) {
    const int pos = first_pos + i;
    const bool valid = pos < end;
    const int64_t slot = valid ? static_cast<int64_t>(table[pos / bs]) * bs + pos % bs : 0;
    const int64_t offset = valid ? slot * token_stride + column : 0;
    CpAsync16(k_row + i * kRow<kDim>, a.cache.k + offset, valid);
    CpAsync16(v_row + i * kRow<kDim>, a.cache.v + offset, valid);
  }
}

// One 16-row mma tile's softmax state: this thread's two rows (g and g + 8).
struct RowState {
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
};

// Causal mask of one 16-row mma tile's scores (kNTiles 8-token column tiles): tokens past a
// row's position get -inf.
template <int kNTiles = kKvNTiles>
__device__ __forceinline__ void CausalMask(float (&s)[kNTiles][4], int tile_begin, int pos0,
                                           int pos1) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int token = tile_begin + j * 8 + 2 * t + (e & 1);
      if (token > (e < 2 ? pos0 : pos1)) s[j][e] = -INFINITY;
    }
  }
}

// The online softmax on raw scores: p = 2^(s * scale_log2 - m * scale_log2), one FFMA and
// one MUFU.EX2 per score; O is rescaled by the change of the running max. s holds p afterwards.
template <int kDimTiles, int kNTiles = kKvNTiles>
__device__ __forceinline__ void OnlineSoftmax(float (&s)[kNTiles][4], float (&o)[kDimTiles][4],
                                              RowState& st, float scale_log2) {
  float tile_max0 = -INFINITY, tile_max1 = -INFINITY;
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) {
    tile_max0 = fmaxf(tile_max0, fmaxf(s[j][0], s[j][1]));
    tile_max1 = fmaxf(tile_max1, fmaxf(s[j][2], s[j][3]));
  }
  const float new0 = fmaxf(st.m0, cuda_kernels::QuadMax(tile_max0));
  const float new1 = fmaxf(st.m1, cuda_kernels::QuadMax(tile_max1));
  const float use0 = new0 == -INFINITY ? 0.0f : new0;
  const float use1 = new1 == -INFINITY ? 0.0f : new1;
  const float alpha0 = cuda_kernels::FastExp2((st.m0 - use0) * scale_log2);
  const float alpha1 = cuda_kernels::FastExp2((st.m1 - use1) * scale_log2);
  const float offset0 = -use0 * scale_log2, offset1 = -use1 * scale_log2;
  st.m0 = new0;
  st.m1 = new1;
  float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
  for (int j = 0; j < kNTiles; ++j) {
    s[j][0] = cuda_kernels::FastExp2(fmaf(s[j][0], scale_log2, offset0));
    s[j][1] = cuda_kernels::FastExp2(fmaf(s[j][1], scale_log2, offset0));
    s[j][2] = cuda_kernels::FastExp2(fmaf(s[j][2], scale_log2, offset1));
    s[j][3] = cuda_kernels::FastExp2(fmaf(s[j][3], scale_log2, offset1));
    sum0 += s[j][0] + s[j][1];
    sum1 += s[j][2] + s[j][3];
  }
  st.l0 = st.l0 * alpha0 + sum0;  // per-thread partial sums; the quad is summed at the end
  st.l1 = st.l1 * alpha1 + sum1;
  cuda_kernels::RescaleRows(o, alpha0, alpha1);
}

// Where a block's tile sits: its sequence, rows and positions.
struct TileInfo {
  int token_begin, row_begin, num_rows, group, first_position, max_position;
  const int32_t* table;

  __device__ int Position(int row) const {  // rows past num_rows take the last valid one's
    return first_position + (row_begin + min(row, num_rows - 1)) / group;
  }
  __device__ int64_t Offset(int row, int kv_head, int num_heads, int dim) const {
    const int64_t token = token_begin + (row_begin + row) / group;
    const int head = kv_head * group + (row_begin + row) % group;
    return (token * num_heads + head) * dim;
  }
};

template <int kTileRows>
__device__ TileInfo ReadTile(const PrefillAttentionArgs& a) {
  TileInfo info;
  const int tile = a.num_tiles - 1 - blockIdx.y;  // tiles run longest first
  const int seq = a.tiles[2 * tile];
  info.row_begin = a.tiles[2 * tile + 1];
  info.group = a.num_heads / a.cache.num_kv_heads;
  info.token_begin = a.query_start[seq];
  const int total_rows = (a.query_start[seq + 1] - info.token_begin) * info.group;
  info.num_rows = min(kTileRows, total_rows - info.row_begin);
  info.first_position = a.positions[info.token_begin];
  info.max_position = info.Position(info.num_rows - 1);
  info.table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  return info;
}

// grid (num_kv_heads, num_tiles); causal work grows with the row, so tiles run longest first.
template <typename S>
__global__ void __launch_bounds__(S::kThreads, S::kMinBlocksPerSm)
    PrefillAttentionKernel(PrefillAttentionArgs a, float scale_log2) {
  constexpr int kDim = S::kDimSize, R = S::R, kWT = S::kTilesPerWarp;
  constexpr int kSteps = kDim / 16;    // k-steps of S = Q·Kᵀ
  constexpr int kDimTiles = kDim / 8;  // n-tiles of O
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __nv_bfloat16* kv_s = reinterpret_cast<__nv_bfloat16*>(shared_raw);  // [2][K|V][64][R]
  // Q: stage 1 until the loop starts (fragments in registers), else its own region
  __nv_bfloat16* q_s = kv_s + (S::kQRegs ? 2 : 4) * kKvTile * R;

  const TileInfo tile = ReadTile<S::kTileRows>(a);
  const int kv_head = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;

  // Q rows (zero past num_rows), then the first K/V tile.
  for (int c = threadIdx.x; c < S::kTileRows * (kDim / 8); c += S::kThreads) {
    const int r = c / (kDim / 8), part = c % (kDim / 8);
    const bool valid = r < tile.num_rows;
    const int64_t offset = valid ? tile.Offset(r, kv_head, a.num_heads, kDim) + part * 8 : 0;
    CpAsync16(q_s + r * R + part * 8, a.q + offset, valid);
  }
  const int num_kv_tiles = tile.max_position / kKvTile + 1;
  const int bs = a.cache.block_size;
  const int block_shift =
      (bs & (bs - 1)) == 0 && bs >= kKvTile * (kDim / 8) / S::kThreads ? __ffs(bs) - 1 : -1;
  LoadKvTile<kDim, S::kThreads>(a, tile.table, kv_head, 0, tile.max_position + 1, block_shift, kv_s,
                                kv_s + kKvTile * R);
  CpAsyncCommit();

  const int warp_row = warp * S::kRowsPerWarp;  // this warp's first row
  RowState st[kWT];
  const int warp_first = tile.Position(warp_row);
  const int warp_last = tile.Position(warp_row + S::kRowsPerWarp - 1);
  const bool warp_active = warp_row < tile.num_rows;

  uint32_t q_frag[S::kQRegs ? kWT : 1][S::kQRegs ? kSteps : 1][4];
  CpAsyncWait<0>();
  __syncthreads();
  if constexpr (S::kQRegs) {
#pragma unroll
    for (int i = 0; i < kWT; ++i) {
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        LdMatrixX4(q_frag[i][kk],
                   q_s + (warp_row + i * 16 + lane % 16) * R + kk * 16 + (lane / 16) * 8);
      }
    }
    __syncthreads();  // q_s (stage 1) is free for tile 1
  }
  float o[kWT][kDimTiles][4];
#pragma unroll
  for (int i = 0; i < kWT; ++i) {
#pragma unroll
    for (int d = 0; d < kDimTiles; ++d) o[i][d][0] = o[i][d][1] = o[i][d][2] = o[i][d][3] = 0.0f;
  }

  for (int kt = 0; kt < num_kv_tiles; ++kt) {
    const int stage = kt & 1;
    if (kt + 1 < num_kv_tiles) {
      __nv_bfloat16* next = kv_s + (stage ^ 1) * 2 * kKvTile * R;
      LoadKvTile<kDim, S::kThreads>(a, tile.table, kv_head, (kt + 1) * kKvTile,
                                    tile.max_position + 1, block_shift, next, next + kKvTile * R);
    }
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    const int tile_begin = kt * kKvTile;
    if (warp_active && tile_begin <= warp_last) {
      const __nv_bfloat16* k_tile = kv_s + stage * 2 * kKvTile * R;
      const __nv_bfloat16* v_tile = k_tile + kKvTile * R;
      float s[kWT][kKvNTiles][4];
#pragma unroll
      for (int i = 0; i < kWT; ++i) {
#pragma unroll
        for (int j = 0; j < kKvNTiles; ++j)
          s[i][j][0] = s[i][j][1] = s[i][j][2] = s[i][j][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        uint32_t qa[kWT][4];
#pragma unroll
        for (int i = 0; i < kWT; ++i) {
          if constexpr (S::kQRegs) {
#pragma unroll
            for (int e = 0; e < 4; ++e) qa[i][e] = q_frag[i][kk][e];
          } else {
            LdMatrixX4(qa[i],
                       q_s + (warp_row + i * 16 + lane % 16) * R + kk * 16 + (lane / 16) * 8);
          }
        }
#pragma unroll
        for (int np = 0; np < kKvTile / 16; ++np) {
          uint32_t b[4];
          LdMatrixX4(b, k_tile + (np * 16 + lane % 8 + (lane / 16) * 8) * R + kk * 16 +
                            ((lane / 8) % 2) * 8);
#pragma unroll
          for (int i = 0; i < kWT; ++i) {
            MmaBf16(s[i][2 * np], qa[i], b[0], b[1]);
            MmaBf16(s[i][2 * np + 1], qa[i], b[2], b[3]);
          }
        }
      }
      if (tile_begin + kKvTile - 1 > warp_first) {  // only tiles past the warp's first row
#pragma unroll
        for (int i = 0; i < kWT; ++i) {
          const int row = warp_row + i * 16 + g;
          CausalMask(s[i], tile_begin, tile.Position(row), tile.Position(row + 8));
        }
      }
#pragma unroll
      for (int i = 0; i < kWT; ++i) OnlineSoftmax<kDimTiles>(s[i], o[i], st[i], scale_log2);
#pragma unroll
      for (int ks = 0; ks < kKvTile / 16; ++ks) {
        uint32_t p[kWT][4];
#pragma unroll
        for (int i = 0; i < kWT; ++i) {
          p[i][0] = PackBf16x2(s[i][2 * ks][0], s[i][2 * ks][1]);
          p[i][1] = PackBf16x2(s[i][2 * ks][2], s[i][2 * ks][3]);
          p[i][2] = PackBf16x2(s[i][2 * ks + 1][0], s[i][2 * ks + 1][1]);
          p[i][3] = PackBf16x2(s[i][2 * ks + 1][2], s[i][2 * ks + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < kDim / 16; ++dp) {
          uint32_t b[4];
          LdMatrixX4Trans(b, v_tile + (ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * R +
                                 dp * 16 + (lane / 16) * 8);
#pragma unroll
          for (int i = 0; i < kWT; ++i) {
            MmaBf16(o[i][2 * dp], p[i], b[0], b[1]);
            MmaBf16(o[i][2 * dp + 1], p[i], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // this stage is consumed before the next iteration refills it
  }

#pragma unroll
  for (int i = 0; i < kWT; ++i) {
    const float l0 = cuda_kernels::QuadSum(st[i].l0), l1 = cuda_kernels::QuadSum(st[i].l1);
    const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = warp_row + i * 16 + g + 8 * half;
      if (r >= tile.num_rows) continue;
      __nv_bfloat16* out = a.out + tile.Offset(r, kv_head, a.num_heads, kDim) + 2 * t;
      const float inv = half == 0 ? inv0 : inv1;
#pragma unroll
      for (int d = 0; d < kDimTiles; ++d) {
        *reinterpret_cast<__nv_bfloat162*>(out + d * 8) =
            __floats2bfloat162_rn(o[i][d][2 * half] * inv, o[i][d][2 * half + 1] * inv);
      }
    }
  }
}


// ---- The wgmma kernel (sm_90a, head_dim 128) ----
// A block is two consumer warpgroups (warps 0-7: 64 of the tile's 128 rows each) and one
// producer warp (warp 8). The producer's first lane streams 128-token K/V tiles into a
// three-stage ring with tensor copies out of the paged cache (one box of min(block_size, 128)
// tokens and 64 dims per cache block and half, 128-byte swizzle), completing on per-stage
// `full_k` / `full_v` mbarriers; each consumer warpgroup computes S = Q·Kᵀ with eight
// wgmma.m64n128k16 (Q and K from shared memory), runs the online softmax on the fp32
// accumulators in registers, and adds P·V with eight more (P from registers as bf16, V
// MN-major from shared memory), then releases the stage on `empty`. The warpgroups do not
// wait for each other, so one's softmax can overlap the other's products (a ping-pong
// schedule through named barriers measured no faster: docs/cuda_backend.md).
// Rows of the last tile past the causal end are read from their cache blocks (or left from
// an earlier tile) and may hold anything: K's are masked; V's are zeroed by the producer
// before the stage is released to the consumers (0 · NaN would poison the row's output).
constexpr int kWgKvTile = 128;            // tokens per K/V tile
constexpr int kWgNTiles = kWgKvTile / 8;  // 8-column n-tiles of S (and of O: 128 dims)
constexpr int kWgThreads = 288;
constexpr int kWgStages = 3;
constexpr int kWgHalfBytes = 128 * 128;         // 128 rows x 64 dims of bf16
constexpr int kWgTileBytes = 2 * kWgHalfBytes;  // Q, or one stage's K or V
// 1024 bytes of slack for aligning the tiles; Q, the stages' K and V; the mbarriers
constexpr size_t kWgSharedBytes =
    1024 + size_t{kWgTileBytes} * (1 + 2 * kWgStages) + sizeof(uint64_t) * (3 * kWgStages + 1);

__global__ void __launch_bounds__(kWgThreads, 1)
    PrefillWgmmaKernel(const __grid_constant__ CUtensorMap k_map,
                       const __grid_constant__ CUtensorMap v_map, PrefillAttentionArgs a,
                       float scale_log2, int box_rows) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace cuda_kernels;
  constexpr int kDim = 128;
  extern __shared__ __align__(16) unsigned char raw[];
  unsigned char* q_s = raw + ((1024 - (SharedAddress(raw) & 1023)) & 1023);
  auto k_s = [&](int stage) { return q_s + kWgTileBytes * (1 + 2 * stage); };
  auto v_s = [&](int stage) { return k_s(stage) + kWgTileBytes; };
  uint64_t* full_k = reinterpret_cast<uint64_t*>(q_s + kWgTileBytes * (1 + 2 * kWgStages));
  uint64_t* full_v = full_k + kWgStages;
  uint64_t* empty = full_v + kWgStages;
  uint64_t* v_fixed = empty + kWgStages;  // the last tile's V copies, before the zeroing

  const TileInfo tile = ReadTile<128>(a);
  const int kv_head = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int end = tile.max_position + 1;  // K/V tokens [0, end)
  const int num_kv_tiles = (end + kWgKvTile - 1) / kWgKvTile;
  const int last_begin = (num_kv_tiles - 1) * kWgKvTile;
  const bool zero_last = end < last_begin + kWgKvTile;

  // The producer warp: K/V tile i into stage i % kWgStages. Lane b < boxes reads the block
  // table for box b and issues its four copies (K and V, both 64-dim halves), so the table
  // reads of a tile are in flight together.
  const int bs = a.cache.block_size;
  const uint32_t box_bytes = static_cast<uint32_t>(box_rows) * 128;
  auto issue_tile = [&](int i) {
    const int st = i % kWgStages, begin = i * kWgKvTile;
    const int boxes = (min(end - begin, kWgKvTile) + box_rows - 1) / box_rows;
    const int pos = begin + lane * box_rows;
    const int slot = lane < boxes ? tile.table[pos / bs] * bs + pos % bs : 0;
    // the consumers released this stage's previous tile
    if (i >= kWgStages) MbarrierWait(&empty[st], (i / kWgStages - 1) & 1);
    uint64_t* v_bar = zero_last && i == num_kv_tiles - 1 ? v_fixed : &full_v[st];
    if (lane == 0) {
      MbarrierArriveExpectTx(&full_k[st], 2 * boxes * box_bytes);
      MbarrierArriveExpectTx(v_bar, 2 * boxes * box_bytes);
    }
    __syncwarp();
    if (lane < boxes) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        TmaLoad3d(k_s(st) + h * kWgHalfBytes + lane * box_bytes, &k_map, 64 * h, kv_head, slot,
                  &full_k[st]);
        TmaLoad3d(v_s(st) + h * kWgHalfBytes + lane * box_bytes, &v_map, 64 * h, kv_head, slot,
                  v_bar);
      }
    }
    __syncwarp();
  };
  if (warp == 8) {  // the first tiles go out before Q is in
    if (lane == 0) {
      for (int st = 0; st < kWgStages; ++st) {
        MbarrierInit(&full_k[st], 1);
        MbarrierInit(&full_v[st], 1);
        MbarrierInit(&empty[st], 8);  // one arrival per consumer warp
      }
      MbarrierInit(v_fixed, 1);
      FenceMbarrierInit();
    }
    __syncwarp();
    for (int i = 0; i < min(num_kv_tiles, kWgStages); ++i) issue_tile(i);
  }
  // Q rows (zero past num_rows) into two 64-dim halves, 128-byte swizzled: the 16-byte piece
  // c of row r lands at piece c ^ (r % 8).
  for (int c = threadIdx.x; c < 128 * (kDim / 8); c += kWgThreads) {
    const int r = c / (kDim / 8), piece = c % (kDim / 8), half = piece / 8;
    const bool valid = r < tile.num_rows;
    const int64_t offset = valid ? tile.Offset(r, kv_head, a.num_heads, kDim) + piece * 8 : 0;
    CpAsync16(q_s + half * kWgHalfBytes + r * 128 + (((piece % 8) ^ (r % 8)) * 16), a.q + offset,
              valid);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  FenceProxyAsyncShared();  // Q's ordinary copies, then the tensor cores' reads
  __syncthreads();          // Q and the mbarriers' initialization visible to every warp

  if (warp == 8) {
    for (int i = kWgStages; i < num_kv_tiles; ++i) issue_tile(i);
    if (zero_last) {
      const int st = (num_kv_tiles - 1) % kWgStages;
      MbarrierWait(v_fixed, 0);
      // rows [end - last_begin, 128) of both halves; whole 128-byte rows, so the swizzle
      // does not matter
      for (int c = (end - last_begin) * 8 + lane; c < 128 * 8; c += 32) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          *reinterpret_cast<uint4*>(v_s(st) + h * kWgHalfBytes + c * 16) = make_uint4(0, 0, 0, 0);
        }
      }
      FenceProxyAsyncShared();
      __syncwarp();
      if (lane == 0) MbarrierArrive(&full_v[st]);
    }
    return;
  }

  const int wg = warp / 4, g = lane / 4, t = lane % 4;
  const int row0 = 64 * wg + 16 * (warp % 4) + g;  // this thread's rows: row0 and row0 + 8
  const int pos0 = tile.Position(row0), pos1 = tile.Position(row0 + 8);
  const int wg_first = tile.Position(64 * wg), wg_last = tile.Position(64 * wg + 63);
  float o[kWgNTiles][4];
#pragma unroll
  for (int d = 0; d < kWgNTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float(&o_flat)[4 * kWgNTiles] = reinterpret_cast<float(&)[4 * kWgNTiles]>(o);
  RowState state;
  // Descriptors of this warpgroup's Q rows and of stage 0's K and V; a stage is
  // 2 * kWgTileBytes further (the descriptors' address field is in 16-byte units).
  const uint64_t q_desc0 = SwizzledKMajorDescriptor(q_s + wg * 64 * 128);
  const uint64_t k_desc0 = SwizzledKMajorDescriptor(k_s(0));
  const uint64_t v_desc0 = SwizzledMnMajorDescriptor(v_s(0), kWgHalfBytes);
  for (int i = 0; i < num_kv_tiles; ++i) {
    const int st = i % kWgStages;
    const uint32_t parity = (i / kWgStages) & 1;
    const int begin = i * kWgKvTile;
    if (begin > wg_last) {  // every row of this warpgroup is before the tile
      MbarrierWait(&full_v[st], parity);  // keeps the stage's arrivals in order
    } else {
      MbarrierWait(&full_k[st], parity);
      float s[kWgNTiles][4];
      float(&s_flat)[4 * kWgNTiles] = reinterpret_cast<float(&)[4 * kWgNTiles]>(s);
      WgmmaFence();
      const uint64_t k_desc = k_desc0 + st * (2 * kWgTileBytes / 16);
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
        // the kk / 4-th half, +32 bytes per 16-dim step in it (16-byte units)
        const int step = (kk / 4) * (kWgHalfBytes / 16) + 2 * (kk % 4);
        WgmmaM64N128K16Scaled(s_flat, q_desc0 + step, k_desc + step, kk > 0);
      }
      WgmmaCommit();
      WgmmaWait<0>();
      FenceAccumulators(s_flat);
      if (begin + kWgKvTile - 1 > wg_first) CausalMask<kWgNTiles>(s, begin, pos0, pos1);
      OnlineSoftmax<kWgNTiles, kWgNTiles>(s, o, state, scale_log2);
      uint32_t p[kWgKvTile / 16][4];  // P's A fragments, one per 16 tokens
#pragma unroll
      for (int kk = 0; kk < kWgKvTile / 16; ++kk) {
        p[kk][0] = PackBf16x2(s[2 * kk][0], s[2 * kk][1]);
        p[kk][1] = PackBf16x2(s[2 * kk][2], s[2 * kk][3]);
        p[kk][2] = PackBf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        p[kk][3] = PackBf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      }
      MbarrierWait(&full_v[st], parity);
      WgmmaFence();
      const uint64_t v_desc = v_desc0 + st * (2 * kWgTileBytes / 16);
#pragma unroll
      for (int kk = 0; kk < kWgKvTile / 16; ++kk) {  // 16 tokens = 2048 bytes further
        WgmmaM64N128K16RegATransB(o_flat, p[kk], v_desc + kk * (16 * 128 / 16));
      }
      WgmmaCommit();
      WgmmaWait<0>();
      FenceAccumulators(o_flat);
    }
    __syncwarp();
    if (lane == 0) MbarrierArrive(&empty[st]);
  }

  const float l0 = QuadSum(state.l0), l1 = QuadSum(state.l1);
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = row0 + 8 * half;
    if (r >= tile.num_rows) continue;
    __nv_bfloat16* out = a.out + tile.Offset(r, kv_head, a.num_heads, kDim) + 2 * t;
    const float inv = half == 0 ? inv0 : inv1;
#pragma unroll
    for (int d = 0; d < kWgNTiles; ++d) {
      *reinterpret_cast<__nv_bfloat162*>(out + d * 8) =
          __floats2bfloat162_rn(o[d][2 * half] * inv, o[d][2 * half + 1] * inv);
    }
  }
#else
  __trap();  // built without sm_90a: the host never launches it (kWgmmaBuilt)
#endif
}

template <typename S>
void Launch(const PrefillAttentionArgs& a, cudaStream_t stream) {
  static const cudaError_t attribute =
      cudaFuncSetAttribute(PrefillAttentionKernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(S::kSharedBytes));
  TANDEM_CUDA_CHECK(attribute);
  const float scale_log2 = a.scale * 1.4426950408889634f;
  dim3 grid(a.cache.num_kv_heads, a.num_tiles);
  PrefillAttentionKernel<S><<<grid, S::kThreads, S::kSharedBytes, stream>>>(a, scale_log2);
  TANDEM_CUDA_CHECK_LAUNCH();
}

// Built with the sm_90a target (TANDEM_CUDA_ARCHITECTURES=90a, the default).
#if defined(TANDEM_CUDA_SM90A)
constexpr bool kWgmmaBuilt = true;
#else
constexpr bool kWgmmaBuilt = false;
#endif

// The wgmma kernel's cases: head_dim 128 and cache blocks a power of two of at least 8
// tokens (whole 1024-byte swizzle atoms per box).
bool WgmmaSupports(const PrefillAttentionArgs& a) {
  const int bs = a.cache.block_size;
  return kWgmmaBuilt && a.cache.head_dim == 128 && bs >= 8 && (bs & (bs - 1)) == 0 &&
         a.cache.num_slots > 0;
}

absl::Status LaunchWgmma(const PrefillAttentionArgs& a, cudaStream_t stream) {
  const PagedKvCache& c = a.cache;
  const int box_rows = std::min(c.block_size, kWgKvTile);
  const uint64_t head_bytes = sizeof(__nv_bfloat16) * 128;
  const uint64_t dims[3] = {128, static_cast<uint64_t>(c.num_kv_heads),
                            static_cast<uint64_t>(c.num_slots)};
  const uint64_t strides[2] = {head_bytes, head_bytes * static_cast<uint64_t>(c.num_kv_heads)};
  const uint32_t box[3] = {64, 1, static_cast<uint32_t>(box_rows)};
  CUtensorMap k_map, v_map;
  TANDEM_RETURN_IF_ERROR(MakeBf16TensorMap(&k_map, c.k, dims, strides, box));
  TANDEM_RETURN_IF_ERROR(MakeBf16TensorMap(&v_map, c.v, dims, strides, box));
  static const cudaError_t attribute =
      cudaFuncSetAttribute(PrefillWgmmaKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(kWgSharedBytes));
  TANDEM_CUDA_CHECK(attribute);
  const float scale_log2 = a.scale * 1.4426950408889634f;
  dim3 grid(c.num_kv_heads, a.num_tiles);
  PrefillWgmmaKernel<<<grid, kWgThreads, kWgSharedBytes, stream>>>(k_map, v_map, a, scale_log2,
                                                                   box_rows);
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

template <int kDim>
void LaunchTiling(const PrefillAttentionArgs& a, cudaStream_t stream) {
  switch (a.tiling) {
    case PrefillTiling::kRows64Warps4:
      return Launch<Shape<kDim, 4, 1, true, 3>>(a, stream);
    case PrefillTiling::kRows128Warps4:
    case PrefillTiling::kRows128Wgmma:  // where the wgmma kernel does not apply
      return Launch<Shape<kDim, 4, 2, false, 2>>(a, stream);
  }
}

}  // namespace

std::vector<int32_t> BuildPrefillTiles(const int32_t* query_start, int32_t num_seqs, int32_t group,
                                       int32_t rows_per_tile) {
  std::vector<int32_t> tiles;
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t rows = (query_start[s + 1] - query_start[s]) * group;
    for (int32_t r = 0; r < rows; r += rows_per_tile) {
      tiles.push_back(s);
      tiles.push_back(r);
    }
  }
  return tiles;
}

std::vector<int32_t> BuildPrefillTilesForTokens(const int32_t* query_start, int32_t num_seqs,
                                                int32_t group, const int32_t* tokens,
                                                int32_t num_tokens, int32_t rows_per_tile) {
  std::vector<int32_t> tiles;
  int32_t s = 0;
  for (int32_t i = 0; i < num_tokens; ++i) {
    const int32_t token = tokens[i];
    while (s < num_seqs && token >= query_start[s + 1]) ++s;
    if (s == num_seqs) break;
    const int32_t first_row = (token - query_start[s]) * group, last_row = first_row + group - 1;
    for (int32_t r = first_row / rows_per_tile * rows_per_tile; r <= last_row;
         r += rows_per_tile) {
      const size_t n = tiles.size();
      if (n >= 2 && tiles[n - 2] == s && tiles[n - 1] == r) continue;  // already listed
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
  if (a.tiling == PrefillTiling::kRows128Wgmma && WgmmaSupports(a)) return LaunchWgmma(a, stream);
  switch (c.head_dim) {
    case 32:
      LaunchTiling<32>(a, stream);
      break;
    case 64:
      LaunchTiling<64>(a, stream);
      break;
    default:
      LaunchTiling<128>(a, stream);
      break;
  }
  return absl::OkStatus();
}

}  // namespace tandem
