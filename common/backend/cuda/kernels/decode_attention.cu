#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/decode_attention.h"
#include "common/backend/cuda/kernels/mma.cuh"

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
constexpr int kTileTokens = 16 * kWarps;  // 16 tokens per warp
constexpr int kStages = 3;
constexpr int kMaxGroup = 16;
constexpr int kTargetBlocks = 264;  // ~2 waves of the H200's 132 SMs

template <int kDim>
constexpr int kRow = kDim + 8;  // padded shared rows: conflict-free ldmatrix

template <int kDim>
constexpr size_t SharedBytes() {
  const size_t tiles = sizeof(__nv_bfloat16) * 2 * kStages * kTileTokens * kRow<kDim>;
  const size_t merge = sizeof(float) * kWarps * kMaxGroup * (kDim + 2);
  return tiles > merge ? tiles : merge;
}

struct Partials {
  float* out;  // [num_seqs][num_heads][num_splits][head_dim], normalized
  float* max;  // [num_seqs][num_heads][num_splits], log2 units
  float* sum;  // [num_seqs][num_heads][num_splits]
};

Partials SplitPartials(float* workspace, int64_t rows, int32_t num_splits, int32_t head_dim) {
  const int64_t entries = rows * num_splits;
  return {workspace, workspace + entries * head_dim, workspace + entries * (head_dim + 1)};
}

// Gathers tokens [tile_begin, tile_begin + 64) of one kv head; tokens past `end` read as 0.
template <int kDim>
__device__ __forceinline__ void LoadKvTile(const DecodeAttentionArgs& a, const int32_t* table,
                                           int kv_head, int tile_begin, int end,
                                           __nv_bfloat16* k_s, __nv_bfloat16* v_s) {
  // Each thread owns one 16-byte column (part) of every 8th (D = 128) token row: the
  // address arithmetic and block-table lookups are per row, not per chunk.
  constexpr int kChunks = kDim / 8, kRowsPerPass = kThreads / kChunks;
  const int bs = a.cache.block_size, part = threadIdx.x % kChunks;
  const int64_t token_stride = static_cast<int64_t>(a.cache.num_kv_heads) * kDim;
  const int64_t column = static_cast<int64_t>(kv_head) * kDim + part * 8;
#pragma unroll
  for (int i = 0; i < kTileTokens / kRowsPerPass; ++i) {
    const int j = threadIdx.x / kChunks + i * kRowsPerPass, pos = tile_begin + j;
    const bool valid = pos < end;
    const int64_t slot = valid ? static_cast<int64_t>(table[pos / bs]) * bs + pos % bs : 0;
    const int64_t offset = slot * token_stride + column;
    CpAsync16(k_s + j * kRow<kDim> + part * 8, a.cache.k + offset, valid);
    CpAsync16(v_s + j * kRow<kDim> + part * 8, a.cache.v + offset, valid);
  }
}

// grid (num_kv_heads, num_seqs, num_splits).
template <int kDim>
__global__ void __launch_bounds__(kThreads) DecodeAttentionKernel(DecodeAttentionArgs a,
                                                                  float scale_log2,
                                                                  Partials partials) {
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

#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < num_tiles) {
      LoadKvTile<kDim>(a, table, kv_head, begin + st * kTileTokens, end,
                       k_s + st * kTileTokens * R, v_s + st * kTileTokens * R);
    }
    CpAsyncCommit();
  }

  // The group's query rows g and g + 8 as A fragments (rows >= group are zero).
  const __nv_bfloat16* q = a.q + (static_cast<int64_t>(seq) * a.num_heads + first_head) * kDim;
  uint32_t q_frag[kSteps][4];
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = g + (i % 2) * 8, col = kk * 16 + (i / 2) * 8 + 2 * t;
      q_frag[kk][i] = r < group ? *reinterpret_cast<const uint32_t*>(q + r * kDim + col) : 0u;
    }
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  for (int kt = 0; kt < num_tiles; ++kt) {
    const int next = kt + kStages - 1;
    if (next < num_tiles) {
      const int st = next % kStages;
      LoadKvTile<kDim>(a, table, kv_head, begin + next * kTileTokens, end,
                       k_s + st * kTileTokens * R, v_s + st * kTileTokens * R);
    }
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    __syncthreads();
    const int first_token = begin + kt * kTileTokens + warp * 16;
    if (first_token < end) {
      const int stage = kt % kStages;
      const __nv_bfloat16* k_rows = k_s + (stage * kTileTokens + warp * 16) * R;
      const __nv_bfloat16* v_rows = v_s + (stage * kTileTokens + warp * 16) * R;
      float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
        uint32_t b[4];
        LdMatrixX4(b, k_rows + (lane % 8 + (lane / 16) * 8) * R + kk * 16 + ((lane / 8) % 2) * 8);
        MmaBf16(s[0], q_frag[kk], b[0], b[1]);
        MmaBf16(s[1], q_frag[kk], b[2], b[3]);
      }
      float max0 = -INFINITY, max1 = -INFINITY;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int token = first_token + j * 8 + 2 * t + (e & 1);
          s[j][e] = token < end ? s[j][e] * scale_log2 : -INFINITY;
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
#pragma unroll
      for (int dp = 0; dp < kDim / 16; ++dp) {
        uint32_t b[4];
        LdMatrixX4Trans(b, v_rows + (lane % 8 + ((lane / 8) % 2) * 8) * R + dp * 16 +
                               (lane / 16) * 8);
        o[2 * dp][0] = o[2 * dp][0] * alpha0;
        o[2 * dp][1] = o[2 * dp][1] * alpha0;
        o[2 * dp][2] = o[2 * dp][2] * alpha1;
        o[2 * dp][3] = o[2 * dp][3] * alpha1;
        o[2 * dp + 1][0] = o[2 * dp + 1][0] * alpha0;
        o[2 * dp + 1][1] = o[2 * dp + 1][1] * alpha0;
        o[2 * dp + 1][2] = o[2 * dp + 1][2] * alpha1;
        o[2 * dp + 1][3] = o[2 * dp + 1][3] * alpha1;
        MmaBf16(o[2 * dp], p, b[0], b[1]);
        MmaBf16(o[2 * dp + 1], p, b[2], b[3]);
      }
    }
    __syncthreads();  // this stage is consumed before a later iteration refills it
  }
  CpAsyncWait<0>();
  __syncthreads();

  // Merge the warps (each saw different tokens) through shared memory.
  float* o_s = reinterpret_cast<float*>(shared_raw);  // [warps][16][kDim]
  float* m_s = o_s + kWarps * kMaxGroup * kDim;        // [warps][16]
  float* l_s = m_s + kWarps * kMaxGroup;               // [warps][16]
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
    float global_max = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (l_s[w * kMaxGroup + r] > 0.0f) global_max = fmaxf(global_max, m_s[w * kMaxGroup + r]);
    }
    float sum = 0.0f, value = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float l = l_s[w * kMaxGroup + r];
      if (l <= 0.0f) continue;
      const float weight = exp2f(m_s[w * kMaxGroup + r] - global_max);
      sum += l * weight;
      value += o_s[(w * kMaxGroup + r) * kDim + d] * weight;
    }
    const float result = sum > 0.0f ? value / sum : 0.0f;
    const int64_t row = static_cast<int64_t>(seq) * a.num_heads + first_head + r;
    if (num_splits == 1) {
      a.out[row * kDim + d] = __float2bfloat16(result);
    } else {
      partials.out[(row * num_splits + split) * kDim + d] = result;
      if (d == 0) {
        partials.max[row * num_splits + split] = global_max;
        partials.sum[row * num_splits + split] = sum;
      }
    }
  }
}

// grid (num_heads, num_seqs), head_dim threads: weights each split by sum * 2^(max - M).
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
      const float weight = sums[s] * exp2f(maxes[s] - global_max);
      total += weight;
      value += weight * partials.out[(row * num_splits + s) * dim + d];
    }
    a.out[row * dim + d] = __float2bfloat16(total > 0.0f ? value / total : 0.0f);
  }
}

template <int kDim>
void Launch(const DecodeAttentionArgs& a, int32_t num_splits, cudaStream_t stream) {
  constexpr size_t kShared = SharedBytes<kDim>();
  static const cudaError_t attribute = cudaFuncSetAttribute(
      DecodeAttentionKernel<kDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(kShared));
  TANDEM_CUDA_CHECK(attribute);
  const int64_t rows = static_cast<int64_t>(a.num_seqs) * a.num_heads;
  Partials partials = SplitPartials(a.workspace, rows, num_splits, kDim);
  dim3 grid(a.cache.num_kv_heads, a.num_seqs, num_splits);
  const float scale_log2 = a.scale * 1.4426950408889634f;
  DecodeAttentionKernel<kDim><<<grid, kThreads, kShared, stream>>>(a, scale_log2, partials);
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
