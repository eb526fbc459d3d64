// Causal attention over a paged KV cache (GQA aware), and the KV write through a slot
// mapping. Reference for the CUDA kernels; the CPU backend runs it per (token, head).
#pragma once

#include <cstdint>
#include <span>

namespace tandem::reference {

// One layer's K and V regions: [num_slots][num_kv_heads][head_dim] each, where
// slot = block_id * block_size + offset (KvOrdering::kLayerKvBlockTokenHeadDim).
struct LayerKv {
  float* k = nullptr;
  float* v = nullptr;
  int64_t num_slots = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

// Copies each token's k/v ([num_tokens][num_kv_heads][head_dim]) into its slot.
void WriteKv(std::span<const float> k, std::span<const float> v,
             std::span<const int32_t> slot_mapping, const LayerKv& cache);

// Output for one query head of one token: softmax(q·K^T * scale) V over the sequence's
// cached tokens at positions [0, position], found via block_table. kv_head is the query
// head's group (head / (num_heads / num_kv_heads)).
// q, out: [head_dim]; scores: scratch of at least position + 1 floats.
void AttendOneHead(std::span<const float> q, int64_t kv_head, int32_t position,
                   std::span<const int32_t> block_table, int64_t block_size,
                   const LayerKv& cache, float scale, std::span<float> scores,
                   std::span<float> out);

// All heads of all tokens. q, out: [num_tokens][num_heads][head_dim]; query_start:
// [num_seqs + 1]; block_tables: [num_seqs]; positions: [num_tokens].
void PagedAttention(std::span<const float> q, int64_t num_heads,
                    std::span<const int32_t> query_start,
                    std::span<const std::span<const int32_t>> block_tables,
                    std::span<const int32_t> positions, int64_t block_size,
                    const LayerKv& cache, float scale, std::span<float> out);

}  // namespace tandem::reference
