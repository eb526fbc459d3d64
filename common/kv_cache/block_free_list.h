// The pool's reusable blocks in eviction order: Front() is reused first.
//
// An intrusive doubly linked list over block ids: push, pop and removal from the middle (a
// prefix-cache hit on a free block) are O(1) and never allocate after construction.
// Owned by BlockPool, which alone mutates it; single-threaded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/kv_cache/block_ids.h"

namespace tandem {

class BlockFreeList {
 public:
  // An empty list over ids [0, num_blocks).
  explicit BlockFreeList(int32_t num_blocks);

  int32_t size() const { return size_; }
  bool Contains(BlockId id) const { return in_list_[static_cast<size_t>(id)]; }
  // kNoBlock when empty / at the end. Front, Next, Next... walks in eviction order.
  BlockId Front() const { return head_; }
  BlockId Back() const { return tail_; }
  BlockId Next(BlockId id) const { return next_[static_cast<size_t>(id)]; }
  BlockId Prev(BlockId id) const { return prev_[static_cast<size_t>(id)]; }

  // Each CHECKs that `id` is (not) in the list as required.
  void PushFront(BlockId id);
  void PushBack(BlockId id);
  void Remove(BlockId id);

 private:
  std::vector<BlockId> prev_;
  std::vector<BlockId> next_;
  std::vector<bool> in_list_;
  BlockId head_ = kNoBlock;
  BlockId tail_ = kNoBlock;
  int32_t size_ = 0;
};

}  // namespace tandem
