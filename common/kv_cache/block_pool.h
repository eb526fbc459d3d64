// A worker's fixed set of KV blocks: reference counts, pins, the free list in eviction
// order, and the prefix cache of full blocks. Knows nothing about sequences or requests.
//
// Who calls: BlockManager only (it is the single owner, on the engine thread; no locks).
// Tests call it directly.
//
// Block states (every block is in exactly one):
//   in use  : ref_count > 0 (held by block tables) or pin_count > 0 (held by a transfer)
//   free    : ref_count == 0 and pin_count == 0; in the free list, reusable
// Orthogonally a block may be *cached*: full, computed, its tokens and keys stored and its
// key in the cache map. A free cached block keeps its KV until it is reused (evicted); a
// prefix-cache hit takes it back out of the free list.
//
// Free-list order: uncached free blocks first (reused first: they hold nothing of value),
// then cached free blocks, least recently freed first (LRU). Release puts a cached block at
// the back, an uncached one at the front. TakeFree evicts: it drops the block's cache entry.
//
// Pins: Pin keeps a block out of the free list whatever its ref count, until the matching
// Unpin, so the KV bytes a transport is reading or writing are never reused under it. Pins
// do not count as references (ref_count is exactly the number of block tables holding it).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/kv_cache/block_free_list.h"
#include "common/kv_cache/block_hash.h"
#include "common/kv_cache/block_ids.h"

namespace tandem {

class BlockPool {
 public:
  // All blocks start free and uncached, in id order.
  BlockPool(int32_t num_blocks, int32_t block_size_tokens, BlockHashFn hash_fn);

  // --- Queries -------------------------------------------------------------------------
  int32_t num_blocks_total() const { return static_cast<int32_t>(blocks_.size()); }
  // Free blocks, cached ones included (they are evicted on reuse).
  int32_t num_blocks_free() const { return free_list_.size(); }
  int32_t num_blocks_cached() const { return static_cast<int32_t>(cache_.size()); }
  int32_t block_size_tokens() const { return block_size_tokens_; }

  int32_t ref_count(BlockId id) const { return block(id).ref_count; }
  int32_t pin_count(BlockId id) const { return block(id).pin_count; }
  bool is_free(BlockId id) const { return free_list_.Contains(id); }
  bool is_cached(BlockId id) const { return block(id).cached; }
  // The cache key of a cached block (CHECKs is_cached).
  const BlockHash& cached_key(BlockId id) const;

  // Walks the free list in eviction order: FirstFree(), NextFree(b)... until kNoBlock.
  BlockId FirstFree() const { return free_list_.Front(); }
  BlockId NextFree(BlockId id) const { return free_list_.Next(id); }

  // key = hash_fn(parent_key, tokens).
  BlockHash Hash(const BlockHash& parent_key, std::span<const int32_t> tokens) const {
    return hash_fn_(parent_key, tokens);
  }

  // The cached block under `key` whose stored parent key and tokens [block_size_tokens]
  // equal these; nullopt on a miss, including a key hit whose tokens or parent differ.
  std::optional<BlockId> FindCached(const BlockHash& key, const BlockHash& parent_key,
                                    std::span<const int32_t> tokens) const;

  // --- Mutations -----------------------------------------------------------------------
  // Takes a specific free block for new content: out of the free list, ref_count 1, cache
  // entry (if any) dropped. CHECKs the block is free.
  void TakeFree(BlockId id);
  // One more reference (a prefix hit or a fork); leaves the free list if it was there.
  void Acquire(BlockId id);
  // One reference fewer; at ref 0 and no pins, into the free list (cached: back, else front).
  void Release(BlockId id);
  void Pin(BlockId id);
  void Unpin(BlockId id);

  // Registers a full, computed, in-use block under `key` = Hash(parent_key, tokens) and
  // stores its tokens. Returns false and leaves the block uncached when another block already
  // holds `key` (a duplicate computed concurrently: the first one stays). A block already
  // cached under `key` is a no-op (true); one cached under another key CHECK-fails.
  bool MarkCached(BlockId id, const BlockHash& key, const BlockHash& parent_key,
                  std::span<const int32_t> tokens);

  // OK when: ref counts equal `expected_ref_counts` [num_blocks_total]; the free list holds
  // exactly the ref-0 unpinned blocks, uncached ones before cached ones, with consistent
  // links; every cache entry names a cached block whose stored parent key and tokens hash to
  // the entry's key, and every cached block has its entry.
  absl::Status CheckInvariants(std::span<const int32_t> expected_ref_counts) const;

 private:
  struct Block {
    int32_t ref_count = 0;
    int32_t pin_count = 0;
    bool cached = false;
    BlockHash key;         // valid when cached
    BlockHash parent_key;  // valid when cached
  };

  const Block& block(BlockId id) const;
  Block& block(BlockId id);
  std::span<const int32_t> stored_tokens(BlockId id) const;
  void Uncache(BlockId id);
  void ReturnToFreeList(BlockId id);
  absl::Status CheckBlockStates(std::span<const int32_t> expected_ref_counts) const;
  absl::Status CheckFreeListOrder() const;
  absl::Status CheckCacheMap() const;

  int32_t block_size_tokens_;
  BlockHashFn hash_fn_;
  std::vector<Block> blocks_;
  std::vector<int32_t> tokens_;  // [num_blocks][block_size_tokens], meaningful when cached
  BlockFreeList free_list_;
  absl::flat_hash_map<BlockHash, BlockId> cache_;
};

}  // namespace tandem
