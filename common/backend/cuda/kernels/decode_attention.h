// Paged decode attention: one query token per sequence attends to its first
// context_lens[s] cached tokens (causal: the token itself was written to the cache first).
//
// GQA-aware: a thread block owns one (kv head, sequence, context split) and computes every
// query head of that kv head's group from one pass over the K/V tiles, so each KV byte is
// read from memory once per step. The group's query rows (padded to 16) are the A operand of
// tensor-core products (mma.sync m16n8k16, bf16 in, fp32 accumulate): each of 4 warps takes
// 16 tokens of a 64-token tile, S = Q·Kᵀ and O += P·V per warp with its own online softmax
// (the output's rescale skipped while the running maxima stand), the warps merged at the
// end. Each warp gathers its own 16 tokens of every tile through the block table with bulk
// copies (the copy engine, one 256-byte K or V row per lane, completing on the warp's
// mbarrier), 3 stages deep, so the warps never wait for each other inside the loop (b64 2k:
// 141 -> 132 us on the H200 against per-thread cp.async and block barriers). Launches of
// more than two single-split blocks per SM (batch 64 x 8 kv heads) use blocks of 2 warps and
// 32-token tiles instead: half the shared memory, four blocks per SM, one wave (b64 2k:
// 168 -> 142 us on the H200, with cp.async). Split-K: every sequence's context is cut into num_splits
// ranges (from its own context length, on the device, so a captured CUDA graph stays valid
// for any lengths up to max_context_len); the splits of one (kv head, sequence) run as one
// thread-block cluster and combine their partial results (max, sum, output) through
// distributed shared memory in the same kernel: no workspace, no second launch. A sequence with
// context_lens[s] == 0 (graph padding) gets zeros. Launched as a programmatic dependent of
// the kernel before it (its launch and index set-up overlap that kernel's tail; it waits for
// it before reading q or the cache).
//
// With qkv set it also does the step's RoPE + KV write (LaunchRopeKvWrite's arithmetic, the
// same bits), one launch fewer per layer: q is rotated in registers, and the block whose
// context split holds the new token rotates its K, writes K and V to the cache and puts
// them into its own tile (so every split reads only tokens already in the cache).
//
// q, out: [num_seqs][num_heads][head_dim] bf16; block_tables: [num_seqs][max_blocks_per_seq];
// head_dim in {32, 64, 128}; num_heads / num_kv_heads <= 16. Scores, softmax and the output
// accumulate in fp32; P is rounded to bf16 for the second product. Reference:
// reference::PagedAttention with one token per sequence.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "common/backend/cuda/kernels/paged_kv.h"

namespace tandem {

struct DecodeAttentionArgs {
  const __nv_bfloat16* q = nullptr;      // [num_seqs][num_heads][head_dim], rotated
  __nv_bfloat16* out = nullptr;          // [num_seqs][num_heads][head_dim]
  const int32_t* context_lens = nullptr;  // [num_seqs], in [0, max_context_len]
  const int32_t* block_tables = nullptr;  // [num_seqs][max_blocks_per_seq]
  int32_t num_seqs = 0;
  int32_t num_heads = 0;
  int32_t max_blocks_per_seq = 0;
  int32_t max_context_len = 0;  // host-side bound of context_lens, picks the number of splits
  float scale = 1.0f;
  PagedKvCache cache;
  int32_t num_splits = 0;  // 0: chosen from the shape; else in [1, DecodeAttentionMaxSplits()]
  // Fused RoPE + KV write (qkv not null; q unused): the step's un-rotated q/k/v, the QKV
  // GEMM's output [num_seqs][(num_heads + 2 num_kv_heads) * head_dim], one token per
  // sequence at positions[s] == context_lens[s] - 1, its K/V written to slot_mapping[s]
  // (none where negative) before it is attended to.
  const __nv_bfloat16* qkv = nullptr;
  const int32_t* positions = nullptr;     // [num_seqs]
  const int32_t* slot_mapping = nullptr;  // [num_seqs]
  const float* inv_freq = nullptr;        // [head_dim / 2]
};

// The most splits per (kv head, sequence): the largest thread-block cluster the device runs
// this kernel in (16 on H100/H200, else the portable 8).
int32_t DecodeAttentionMaxSplits();
// Splits chosen for a shape when num_splits is 0.
int32_t DecodeAttentionNumSplits(int32_t num_seqs, int32_t num_kv_heads, int32_t max_context_len);

absl::Status LaunchDecodeAttention(const DecodeAttentionArgs& args, cudaStream_t stream);

}  // namespace tandem
