#include "common/kv_cache/block_free_list.h"

#include "common/logging.h"

namespace tandem {

BlockFreeList::BlockFreeList(int32_t num_blocks)
    : prev_(static_cast<size_t>(num_blocks), kNoBlock),
      next_(static_cast<size_t>(num_blocks), kNoBlock),
      in_list_(static_cast<size_t>(num_blocks), false) {}

void BlockFreeList::PushFront(BlockId id) {
  TANDEM_CHECK(!Contains(id)) << "block " << id << " is already free";
  prev_[static_cast<size_t>(id)] = kNoBlock;
  next_[static_cast<size_t>(id)] = head_;
  if (head_ != kNoBlock) prev_[static_cast<size_t>(head_)] = id;
  head_ = id;
  if (tail_ == kNoBlock) tail_ = id;
  in_list_[static_cast<size_t>(id)] = true;
  ++size_;
}

void BlockFreeList::PushBack(BlockId id) {
  TANDEM_CHECK(!Contains(id)) << "block " << id << " is already free";
  next_[static_cast<size_t>(id)] = kNoBlock;
  prev_[static_cast<size_t>(id)] = tail_;
  if (tail_ != kNoBlock) next_[static_cast<size_t>(tail_)] = id;
  tail_ = id;
  if (head_ == kNoBlock) head_ = id;
  in_list_[static_cast<size_t>(id)] = true;
  ++size_;
}

void BlockFreeList::Remove(BlockId id) {
  TANDEM_CHECK(Contains(id)) << "block " << id << " is not free";
  const BlockId prev = prev_[static_cast<size_t>(id)];
  const BlockId next = next_[static_cast<size_t>(id)];
  if (prev != kNoBlock) {
    next_[static_cast<size_t>(prev)] = next;
  } else {
    head_ = next;
  }
  if (next != kNoBlock) {
    prev_[static_cast<size_t>(next)] = prev;
  } else {
    tail_ = prev;
  }
  prev_[static_cast<size_t>(id)] = kNoBlock;
  next_[static_cast<size_t>(id)] = kNoBlock;
  in_list_[static_cast<size_t>(id)] = false;
  --size_;
}

}  // namespace tandem
