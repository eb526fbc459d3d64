// What BlockManager::PlanAllocate decided and BlockManager::Commit applies. Plain data: the
// engine reads it to build the step (the KV copy for copy-on-write, the prefix hit), tests
// build one by hand.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/kv_cache/block_hash.h"
#include "common/kv_cache/block_ids.h"

namespace tandem {

// Copy every KV byte of block `src` (all layers, K and V) into block `dst`. The model runner
// must do it before this step's forward pass writes into `dst`.
struct BlockCopy {
  BlockId src = kNoBlock;
  BlockId dst = kNoBlock;

  bool operator==(const BlockCopy&) const = default;
};

struct AllocationPlan {
  SeqId seq_id = 0;
  // The sequence had no block table; Commit creates it (with the prefix hits below).
  bool is_new_sequence = false;

  // New sequences only. Tokens looked up in the prefix cache (token_ids.size()) and the
  // leading tokens whose KV is reused: a multiple of block_size_tokens, always less than
  // num_query_tokens so at least one token is computed and yields logits.
  int64_t num_query_tokens = 0;
  int64_t num_cached_tokens = 0;
  std::vector<BlockId> cached_blocks;          // [num_cached_tokens / block_size_tokens]
  std::vector<BlockHash> cached_block_hashes;  // their chained keys, same order

  // Slots for positions [first_new_position, first_new_position + num_new_tokens).
  // first_new_position is the sequence's num_tokens before (num_cached_tokens when new).
  int64_t first_new_position = 0;
  int64_t num_new_tokens = 0;

  // Set when the sequence's last block is partially filled and shared (after Fork): the
  // sequence gets copy->dst in place of copy->src, and the runner copies the KV first.
  std::optional<BlockCopy> copy_on_write;
  // Free blocks appended to the block table, in order (eviction order of the free list).
  std::vector<BlockId> new_blocks;

  // The manager's mutation counter when planned: a plan is valid only until the next
  // mutation, and Commit CHECKs that.
  uint64_t manager_version = 0;
};

}  // namespace tandem
