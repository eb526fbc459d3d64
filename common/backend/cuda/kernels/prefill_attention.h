// Causal attention over the paged KV cache for any batch of query chunks (prefill, chunked
// prefill, prefix blocks already cached, decode rows mixed in).
//
// Sequence s owns token rows query_start[s]..query_start[s+1] with consecutive positions;
// each row attends to its sequence's cached tokens at positions <= its own (its K/V, and
// those of earlier chunks, were written by the RoPE/KV-write kernel before this runs).
// Work is cut into tiles of (token, head-of-group) rows of one sequence and one kv head,
// so a K/V tile loaded into shared memory serves every query head of its group. Flash-
// attention-2 style on tensor cores: each warp owns 16 or 32 rows; S = Q·Kᵀ and O += P·V are
// mma.sync m16n8k16 (bf16 operands, fp32 accumulators), the online softmax stays in fp32
// registers, P is rounded to bf16 for the second product; 64-token K/V tiles are gathered
// through the block table with cp.async, double-buffered.
//
// q, out: [num_tokens][num_heads][head_dim] bf16; head_dim in {32, 64, 128}.
// Reference: reference::PagedAttention.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/backend/cuda/kernels/paged_kv.h"

namespace tandem {

// Block shapes of the kernel. kRows128Warps4 (flash-attention-2's shape for head_dim 128):
// 4 warps of 32 rows, each K/V fragment read from shared memory feeds two mmas, Q re-read
// from shared memory per K/V tile, 2 blocks per SM; half the K/V tile loads per query row of
// kRows64Warps4 (milestone 2's shape: 4 warps of 16 rows, Q fragments in registers, 3 blocks
// per SM), which stays for the benchmark's comparison and is faster only for short prompts
// (docs/cuda_backend.md, "Milestone 3: prefill").
// kRows128Wgmma (sm_90a builds, head_dim 128, power-of-two cache blocks of >= 8 tokens;
// kRows128Warps4 elsewhere, on the same tiles): two warpgroups of 64 rows on wgmma, a
// producer warp streaming 128-token K/V tiles out of the paged cache with tensor copies.
enum class PrefillTiling { kRows64Warps4, kRows128Warps4, kRows128Wgmma };
constexpr PrefillTiling kDefaultPrefillTiling = PrefillTiling::kRows128Wgmma;

constexpr int32_t PrefillRowsPerTile(PrefillTiling tiling) {
  return tiling == PrefillTiling::kRows64Warps4 ? 64 : 128;
}
// Rows per tile of the default tiling: what BuildPrefillTiles cuts by default.
constexpr int32_t kPrefillRowsPerTile = PrefillRowsPerTile(kDefaultPrefillTiling);

struct PrefillAttentionArgs {
  const __nv_bfloat16* q = nullptr;      // [num_tokens][num_heads][head_dim]
  __nv_bfloat16* out = nullptr;          // [num_tokens][num_heads][head_dim]
  const int32_t* positions = nullptr;    // [num_tokens]
  const int32_t* query_start = nullptr;  // [num_seqs + 1]
  const int32_t* block_tables = nullptr;  // [num_seqs][max_blocks_per_seq]
  const int32_t* tiles = nullptr;         // [num_tiles][2]: (sequence, first row), from
                                          // BuildPrefillTiles with this tiling's rows per
                                          // tile, on the device
  int32_t num_tiles = 0;
  int32_t num_heads = 0;
  int32_t max_blocks_per_seq = 0;
  float scale = 1.0f;
  PagedKvCache cache;
  PrefillTiling tiling = kDefaultPrefillTiling;
};

// Host-side tile list for query_start (host copy): for each sequence, rows
// (token - first token) * group + head_in_group cut into tiles of rows_per_tile.
std::vector<int32_t> BuildPrefillTiles(const int32_t* query_start, int32_t num_seqs, int32_t group,
                                       int32_t rows_per_tile = kPrefillRowsPerTile);

// The tiles of BuildPrefillTiles that hold any row of tokens[0, num_tokens) (batch token
// indices, ascending, each inside [0, query_start[num_seqs])), in the same order: attention
// for just those tokens' rows (the runner's last layer, where only the logits rows go on).
std::vector<int32_t> BuildPrefillTilesForTokens(const int32_t* query_start, int32_t num_seqs,
                                                int32_t group, const int32_t* tokens,
                                                int32_t num_tokens,
                                                int32_t rows_per_tile = kPrefillRowsPerTile);

absl::Status LaunchPrefillAttention(const PrefillAttentionArgs& args, cudaStream_t stream);

}  // namespace tandem
