#include "common/kv_cache/block_pool.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace tandem {

BlockPool::BlockPool(int32_t num_blocks, int32_t block_size_tokens, BlockHashFn hash_fn)
    : block_size_tokens_(block_size_tokens),
      hash_fn_(hash_fn),
      blocks_(static_cast<size_t>(num_blocks)),
      tokens_(static_cast<size_t>(num_blocks) * static_cast<size_t>(block_size_tokens)),
      free_list_(num_blocks) {
  TANDEM_CHECK(num_blocks >= 0) << "num_blocks " << num_blocks;
  TANDEM_CHECK(block_size_tokens > 0) << "block_size_tokens " << block_size_tokens;
  TANDEM_CHECK(hash_fn != nullptr);
  for (BlockId id = 0; id < num_blocks; ++id) free_list_.PushBack(id);
}

const BlockPool::Block& BlockPool::block(BlockId id) const {
  TANDEM_CHECK(id >= 0 && id < num_blocks_total()) << "block id " << id << " out of range";
  return blocks_[static_cast<size_t>(id)];
}

BlockPool::Block& BlockPool::block(BlockId id) {
  TANDEM_CHECK(id >= 0 && id < num_blocks_total()) << "block id " << id << " out of range";
  return blocks_[static_cast<size_t>(id)];
}

std::span<const int32_t> BlockPool::stored_tokens(BlockId id) const {
  return std::span<const int32_t>(tokens_).subspan(
      static_cast<size_t>(id) * static_cast<size_t>(block_size_tokens_),
      static_cast<size_t>(block_size_tokens_));
}

const BlockHash& BlockPool::cached_key(BlockId id) const {
  TANDEM_CHECK(block(id).cached) << "block " << id << " is not cached";
  return block(id).key;
}

std::optional<BlockId> BlockPool::FindCached(const BlockHash& key, const BlockHash& parent_key,
                                             std::span<const int32_t> tokens) const {
  auto it = cache_.find(key);
  if (it == cache_.end()) return std::nullopt;
  const BlockId id = it->second;
  // Never trust the key alone: a colliding key with other content is a miss.
  if (!(block(id).parent_key == parent_key)) return std::nullopt;
  std::span<const int32_t> stored = stored_tokens(id);
  if (!std::equal(stored.begin(), stored.end(), tokens.begin(), tokens.end())) {
    return std::nullopt;
  }
  return id;
}

void BlockPool::Uncache(BlockId id) {
  Block& b = block(id);
  if (!b.cached) return;
  auto it = cache_.find(b.key);
  TANDEM_CHECK(it != cache_.end() && it->second == id) << "cache map lost block " << id;
  cache_.erase(it);
  b.cached = false;
}

void BlockPool::TakeFree(BlockId id) {
  free_list_.Remove(id);  // CHECKs it is free
  Uncache(id);            // reused for other content: its old key must not hit any more
  block(id).ref_count = 1;
}

void BlockPool::Acquire(BlockId id) {
  Block& b = block(id);
  if (free_list_.Contains(id)) free_list_.Remove(id);
  ++b.ref_count;
}

void BlockPool::ReturnToFreeList(BlockId id) {
  // Cached blocks go to the back so they are evicted last (LRU); uncached ones hold nothing
  // worth keeping and are reused first.
  if (block(id).cached) {
    free_list_.PushBack(id);
  } else {
    free_list_.PushFront(id);
  }
}

void BlockPool::Release(BlockId id) {
  Block& b = block(id);
  TANDEM_CHECK(b.ref_count > 0) << "release of unreferenced block " << id;
  if (--b.ref_count == 0 && b.pin_count == 0) ReturnToFreeList(id);
}

void BlockPool::Pin(BlockId id) {
  Block& b = block(id);
  if (free_list_.Contains(id)) free_list_.Remove(id);
  ++b.pin_count;
}

void BlockPool::Unpin(BlockId id) {
  Block& b = block(id);
  TANDEM_CHECK(b.pin_count > 0) << "unpin of unpinned block " << id;
  if (--b.pin_count == 0 && b.ref_count == 0) ReturnToFreeList(id);
}

bool BlockPool::MarkCached(BlockId id, const BlockHash& key, const BlockHash& parent_key,
                           std::span<const int32_t> tokens) {
  Block& b = block(id);
  TANDEM_CHECK(tokens.size() == static_cast<size_t>(block_size_tokens_))
      << "a cached block holds " << block_size_tokens_ << " tokens, got " << tokens.size();
  TANDEM_CHECK(b.ref_count > 0) << "only an in-use block can be registered: " << id;
  if (b.cached) {
    TANDEM_CHECK(b.key == key) << "block " << id << " re-registered with other content";
    return true;
  }
  if (!cache_.try_emplace(key, id).second) return false;
  b.cached = true;
  b.key = key;
  b.parent_key = parent_key;
  const size_t offset = static_cast<size_t>(id) * static_cast<size_t>(block_size_tokens_);
  std::copy(tokens.begin(), tokens.end(), tokens_.begin() + static_cast<std::ptrdiff_t>(offset));
  return true;
}

absl::Status BlockPool::CheckInvariants(std::span<const int32_t> expected_ref_counts) const {
  if (expected_ref_counts.size() != blocks_.size()) {
    return absl::InternalError(absl::StrCat("expected ref counts for ", blocks_.size(),
                                            " blocks, got ", expected_ref_counts.size()));
  }
  if (absl::Status s = CheckBlockStates(expected_ref_counts); !s.ok()) return s;
  if (absl::Status s = CheckFreeListOrder(); !s.ok()) return s;
  return CheckCacheMap();
}

absl::Status BlockPool::CheckBlockStates(std::span<const int32_t> expected_ref_counts) const {
  int32_t num_reusable = 0;
  for (BlockId id = 0; id < num_blocks_total(); ++id) {
    const Block& b = blocks_[static_cast<size_t>(id)];
    if (b.ref_count != expected_ref_counts[static_cast<size_t>(id)]) {
      return absl::InternalError(absl::StrCat("block ", id, " has ref_count ", b.ref_count, " but ",
                                              expected_ref_counts[static_cast<size_t>(id)],
                                              " block tables hold it"));
    }
    if (b.ref_count < 0 || b.pin_count < 0) {
      return absl::InternalError(absl::StrCat("block ", id, " has a negative count"));
    }
    const bool reusable = b.ref_count == 0 && b.pin_count == 0;
    num_reusable += reusable ? 1 : 0;
    if (reusable != free_list_.Contains(id)) {
      return absl::InternalError(absl::StrCat("block ", id, " (ref ", b.ref_count, ", pins ",
                                              b.pin_count, ") is ", reusable ? "not " : "",
                                              "in the free list"));
    }
  }
  if (num_reusable != free_list_.size()) {
    return absl::InternalError(
        absl::StrCat(num_reusable, " reusable blocks but free list size ", free_list_.size()));
  }
  return absl::OkStatus();
}

absl::Status BlockPool::CheckFreeListOrder() const {
  int32_t walked = 0;
  bool seen_cached = false;
  BlockId prev = kNoBlock;
  for (BlockId id = free_list_.Front(); id != kNoBlock; id = free_list_.Next(id)) {
    if (++walked > free_list_.size()) return absl::InternalError("free list has a cycle");
    if (free_list_.Prev(id) != prev) {
      return absl::InternalError(absl::StrCat("free list back link broken at block ", id));
    }
    if (seen_cached && !block(id).cached) {
      return absl::InternalError(
          absl::StrCat("uncached free block ", id, " after a cached one: it would outlive it"));
    }
    seen_cached = seen_cached || block(id).cached;
    prev = id;
  }
  if (walked != free_list_.size() || free_list_.Back() != prev) {
    return absl::InternalError(
        absl::StrCat("free list walk found ", walked, " of ", free_list_.size(), " blocks"));
  }
  return absl::OkStatus();
}

absl::Status BlockPool::CheckCacheMap() const {
  int32_t num_cached = 0;
  for (BlockId id = 0; id < num_blocks_total(); ++id) {
    const Block& b = blocks_[static_cast<size_t>(id)];
    if (!b.cached) continue;
    ++num_cached;
    auto it = cache_.find(b.key);
    if (it == cache_.end() || it->second != id) {
      return absl::InternalError(absl::StrCat("cached block ", id, " is not under its key"));
    }
    if (!(hash_fn_(b.parent_key, stored_tokens(id)) == b.key)) {
      return absl::InternalError(
          absl::StrCat("cached block ", id, ": stored parent key and tokens do not hash to key"));
    }
  }
  if (num_cached != num_blocks_cached()) {
    return absl::InternalError(
        absl::StrCat(num_blocks_cached(), " cache entries but ", num_cached, " cached blocks"));
  }
  return absl::OkStatus();
}

}  // namespace tandem
