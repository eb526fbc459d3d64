#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/decode_attention.h"
#include "common/backend/cuda/kernels/device_utils.cuh"

namespace tandem {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTileTokens = 64;
constexpr int kMaxGroup = 8;
constexpr int kTargetBlocks = 264;  // ~2 waves of the H200's 132 SMs

struct Partials {
  float* out;  // [num_seqs][num_heads][num_splits][head_dim]
  float* max;  // [num_seqs][num_heads][num_splits]
  float* sum;  // [num_seqs][num_heads][num_splits]
};

Partials SplitPartials(float* workspace, int64_t rows, int32_t num_splits, int32_t head_dim) {
  const int64_t entries = rows * num_splits;
  return {workspace, workspace + entries * head_dim, workspace + entries * (head_dim + 1)};
}

// Loads tokens [tile_begin, tile_begin + n) of one kv head into padded shared rows.
template <int kDim>
__device__ __forceinline__ void LoadKvTile(const DecodeAttentionArgs& a, const int32_t* table,
                                           int kv_head, int tile_begin, int n,
                                           __nv_bfloat16* k_tile, __nv_bfloat16* v_tile) {
  constexpr int kChunks = kDim / 8, kRow = kDim + 8;
  const int bs = a.cache.block_size;
  for (int c = threadIdx.x; c < n * kChunks; c += kThreads) {
    const int j = c / kChunks, part = c % kChunks, pos = tile_begin + j;
    const int64_t slot = static_cast<int64_t>(table[pos / bs]) * bs + pos % bs;
    const int64_t offset = (slot * a.cache.num_kv_heads + kv_head) * kDim + part * 8;
    *reinterpret_cast<uint4*>(k_tile + j * kRow + part * 8) =
        *reinterpret_cast<const uint4*>(a.cache.k + offset);
    *reinterpret_cast<uint4*>(v_tile + j * kRow + part * 8) =
        *reinterpret_cast<const uint4*>(a.cache.v + offset);
  }
}

// grid (num_kv_heads, num_seqs, num_splits). Online softmax over 64-token tiles.
template <int kDim>
__global__ void __launch_bounds__(kThreads) DecodeAttentionKernel(DecodeAttentionArgs a,
                                                                  int32_t split_tokens,
                                                                  Partials partials) {
  constexpr int kRow = kDim + 8;  // +16 bytes per row: conflict-free 16-byte reads by row
  constexpr int kAccPerThread = kMaxGroup * kDim / kThreads;
  __shared__ __align__(16) __nv_bfloat16 k_tile[kTileTokens * kRow];
  __shared__ __align__(16) __nv_bfloat16 v_tile[kTileTokens * kRow];
  __shared__ __align__(16) float q_s[kMaxGroup * kDim];
  __shared__ float scores[kMaxGroup * kTileTokens];
  __shared__ float row_max[kMaxGroup], row_sum[kMaxGroup], row_alpha[kMaxGroup];

  const int kv_head = blockIdx.x, seq = blockIdx.y, split = blockIdx.z;
  const int group = a.num_heads / a.cache.num_kv_heads;
  const int first_head = kv_head * group;
  const int context = a.context_lens[seq];
  const int begin = split * split_tokens;
  const int end = min(context, begin + split_tokens);
  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const __nv_bfloat16* q = a.q + (static_cast<int64_t>(seq) * a.num_heads + first_head) * kDim;
  for (int i = threadIdx.x; i < group * kDim; i += kThreads) {
    q_s[i] = __bfloat162float(q[i]) * a.scale;
  }
  if (threadIdx.x < group) {
    row_max[threadIdx.x] = -INFINITY;
    row_sum[threadIdx.x] = 0.0f;
  }
  float acc[kAccPerThread];
#pragma unroll
  for (int e = 0; e < kAccPerThread; ++e) acc[e] = 0.0f;
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int tile_begin = begin; tile_begin < end; tile_begin += kTileTokens) {
    const int n = min(kTileTokens, end - tile_begin);
    LoadKvTile<kDim>(a, table, kv_head, tile_begin, n, k_tile, v_tile);
    __syncthreads();
    // scores[g][j] = q_g · k_j
    for (int pair = threadIdx.x; pair < group * n; pair += kThreads) {
      const int g = pair / n, j = pair % n;
      float s = 0.0f;
#pragma unroll
      for (int part = 0; part < kDim / 8; ++part) {
        float k8[8];
        cuda_kernels::LoadBf16x8(k_tile + j * kRow + part * 8, k8);
#pragma unroll
        for (int e = 0; e < 8; ++e) s += q_s[g * kDim + part * 8 + e] * k8[e];
      }
      scores[g * kTileTokens + j] = s;
    }
    __syncthreads();
    // online softmax: one warp per head of the group
    for (int g = warp; g < group; g += kWarps) {
      float* s = scores + g * kTileTokens;
      const float s0 = lane < n ? s[lane] : -INFINITY;
      const float s1 = lane + 32 < n ? s[lane + 32] : -INFINITY;
      const float m_old = row_max[g], l_old = row_sum[g];
      const float m_new = fmaxf(m_old, cuda_kernels::WarpMax(fmaxf(s0, s1)));
      const float p0 = lane < n ? expf(s0 - m_new) : 0.0f;
      const float p1 = lane + 32 < n ? expf(s1 - m_new) : 0.0f;
      const float tile_sum = cuda_kernels::WarpSum(p0 + p1);
      if (lane < n) s[lane] = p0;
      if (lane + 32 < n) s[lane + 32] = p1;
      __syncwarp();  // every lane has read row_max/row_sum before lane 0 rewrites them
      if (lane == 0) {
        const float alpha = expf(m_old - m_new);
        row_alpha[g] = alpha;
        row_sum[g] = l_old * alpha + tile_sum;
        row_max[g] = m_new;
      }
    }
    __syncthreads();
    // acc[g][d] = acc * alpha_g + sum_j p[g][j] * v[j][d]
#pragma unroll
    for (int e = 0; e < kAccPerThread; ++e) {
      const int idx = threadIdx.x + e * kThreads;
      if (idx < group * kDim) {
        const int g = idx / kDim, d = idx % kDim;
        float value = acc[e] * row_alpha[g];
        for (int j = 0; j < n; ++j) {
          value += scores[g * kTileTokens + j] * __bfloat162float(v_tile[j * kRow + d]);
        }
        acc[e] = value;
      }
    }
    __syncthreads();
  }

  const int num_splits = gridDim.z;
#pragma unroll
  for (int e = 0; e < kAccPerThread; ++e) {
    const int idx = threadIdx.x + e * kThreads;
    if (idx >= group * kDim) continue;
    const int g = idx / kDim, d = idx % kDim;
    const int64_t row = static_cast<int64_t>(seq) * a.num_heads + first_head + g;
    const float sum = row_sum[g];
    const float value = sum > 0.0f ? acc[e] / sum : 0.0f;
    if (num_splits == 1) {
      a.out[row * kDim + d] = __float2bfloat16(value);
    } else {
      partials.out[(row * num_splits + split) * kDim + d] = value;
      if (d == 0) {
        partials.max[row * num_splits + split] = row_max[g];
        partials.sum[row * num_splits + split] = sum;
      }
    }
  }
}

// grid (num_heads, num_seqs), head_dim threads: weights each split by sum * e^(max - M).
__global__ void CombineSplitsKernel(DecodeAttentionArgs a, int32_t num_splits,
                                    Partials partials) {
  const int64_t row = static_cast<int64_t>(blockIdx.y) * a.num_heads + blockIdx.x;
  const int dim = a.cache.head_dim;
  const float* maxes = partials.max + row * num_splits;
  const float* sums = partials.sum + row * num_splits;
  float global_max = -INFINITY;
  for (int s = 0; s < num_splits; ++s) {
    if (sums[s] > 0.0f) global_max = fmaxf(global_max, maxes[s]);
  }
  for (int d = threadIdx.x; d < dim; d += blockDim.x) {
    float total = 0.0f, value = 0.0f;
    for (int s = 0; s < num_splits; ++s) {
      if (sums[s] <= 0.0f) continue;
      const float weight = sums[s] * expf(maxes[s] - global_max);
      total += weight;
      value += weight * partials.out[(row * num_splits + s) * dim + d];
    }
    a.out[row * dim + d] = __float2bfloat16(value / total);
  }
}

int32_t SplitTokens(int32_t max_context_len, int32_t num_splits) {
  int32_t per_split = (max_context_len + num_splits - 1) / num_splits;
  return (per_split + kTileTokens - 1) / kTileTokens * kTileTokens;
}

template <int kDim>
void Launch(const DecodeAttentionArgs& a, int32_t num_splits, cudaStream_t stream) {
  const int32_t split_tokens = SplitTokens(a.max_context_len, num_splits);
  const int64_t rows = static_cast<int64_t>(a.num_seqs) * a.num_heads;
  Partials partials = SplitPartials(a.workspace, rows, num_splits, kDim);
  dim3 grid(a.cache.num_kv_heads, a.num_seqs, num_splits);
  DecodeAttentionKernel<kDim><<<grid, kThreads, 0, stream>>>(a, split_tokens, partials);
  TANDEM_CUDA_CHECK_LAUNCH();
  if (num_splits > 1) {
    CombineSplitsKernel<<<dim3(a.num_heads, a.num_seqs), kDim, 0, stream>>>(a, num_splits,
                                                                           partials);
    TANDEM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace

int32_t DecodeAttentionNumSplits(int32_t num_seqs, int32_t num_kv_heads,
                                 int32_t max_context_len) {
  const int64_t blocks = std::max<int64_t>(1, static_cast<int64_t>(num_seqs) * num_kv_heads);
  const int32_t wanted = static_cast<int32_t>((kTargetBlocks + blocks - 1) / blocks);
  const int32_t max_useful = std::max(1, (max_context_len + kTileTokens - 1) / kTileTokens);
  return std::clamp(wanted, 1, max_useful);
}

size_t DecodeAttentionWorkspaceBytes(int32_t num_seqs, int32_t num_heads, int32_t num_kv_heads,
                                     int32_t head_dim, int32_t max_context_len,
                                     int32_t num_splits) {
  if (num_splits == 0) num_splits = DecodeAttentionNumSplits(num_seqs, num_kv_heads, max_context_len);
  if (num_splits <= 1) return 0;
  return static_cast<size_t>(num_seqs) * num_heads * num_splits * (head_dim + 2) * sizeof(float);
}

size_t DecodeAttentionMaxWorkspaceBytes(int32_t max_num_seqs, int32_t num_heads,
                                        int32_t num_kv_heads, int32_t head_dim) {
  // splits <= ceil(kTargetBlocks / (seqs * kv_heads)), so seqs * splits <= seqs + kTargetBlocks.
  const int64_t entries = (static_cast<int64_t>(max_num_seqs) + kTargetBlocks) * num_heads;
  return static_cast<size_t>(entries) * (head_dim + 2) * sizeof(float);
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
  if (a.q == nullptr || a.out == nullptr || a.context_lens == nullptr ||
      a.block_tables == nullptr || c.k == nullptr || c.v == nullptr) {
    return absl::InvalidArgumentError("decode_attention: null pointer");
  }
  const int32_t num_splits = a.num_splits > 0 ? a.num_splits
                                              : DecodeAttentionNumSplits(a.num_seqs, c.num_kv_heads,
                                                                         a.max_context_len);
  const size_t needed = DecodeAttentionWorkspaceBytes(a.num_seqs, a.num_heads, c.num_kv_heads,
                                                      c.head_dim, a.max_context_len, num_splits);
  if (needed > 0 && (a.workspace == nullptr || a.workspace_bytes < needed)) {
    return absl::InvalidArgumentError(absl::StrCat("decode_attention: workspace of ", needed,
                                                   " bytes needed, got ", a.workspace_bytes));
  }
  switch (c.head_dim) {
    case 32: Launch<32>(a, num_splits, stream); break;
    case 64: Launch<64>(a, num_splits, stream); break;
    default: Launch<128>(a, num_splits, stream); break;
  }
  return absl::OkStatus();
}

}  // namespace tandem
