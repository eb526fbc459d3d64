#include "common/kv_cache/block_manager.h"

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace tandem {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

BlockManager::BlockManager(const BlockManagerOptions& options)
    : pool_(options.num_blocks, options.block_size_tokens, options.hash_fn) {}

const BlockManager::SeqBlocks& BlockManager::seq(SeqId seq_id) const {
  auto it = seqs_.find(seq_id);
  TANDEM_CHECK(it != seqs_.end()) << "unknown sequence " << seq_id;
  return it->second;
}

std::span<const int32_t> BlockManager::BlockTokens(std::span<const int32_t> token_ids,
                                                   int64_t block_index) const {
  const size_t block_size = static_cast<size_t>(block_size_tokens());
  return token_ids.subspan(static_cast<size_t>(block_index) * block_size, block_size);
}

// --- Queries -------------------------------------------------------------------------------

void BlockManager::PlanPrefixHits(std::span<const int32_t> token_ids, AllocationPlan& plan) const {
  const int64_t num_tokens = static_cast<int64_t>(token_ids.size());
  // Only whole blocks, and never the last token: the model must compute at least one
  // position to produce logits.
  const int64_t max_blocks = num_tokens > 0 ? (num_tokens - 1) / block_size_tokens() : 0;
  absl::flat_hash_set<BlockId> seen;  // a colliding key must not put a block in twice
  BlockHash parent = kRootBlockHash;
  for (int64_t i = 0; i < max_blocks; ++i) {
    std::span<const int32_t> tokens = BlockTokens(token_ids, i);
    const BlockHash key = pool_.Hash(parent, tokens);
    std::optional<BlockId> hit = pool_.FindCached(key, parent, tokens);
    if (!hit || !seen.insert(*hit).second) break;
    plan.cached_blocks.push_back(*hit);
    plan.cached_block_hashes.push_back(key);
    parent = key;
  }
  plan.num_cached_tokens = static_cast<int64_t>(plan.cached_blocks.size()) * block_size_tokens();
}

int64_t BlockManager::CountCachedPrefixTokens(std::span<const int32_t> token_ids) const {
  AllocationPlan plan;
  PlanPrefixHits(token_ids, plan);
  return plan.num_cached_tokens;
}

bool BlockManager::PlanFreeBlocks(int64_t num_blocks, AllocationPlan& plan) const {
  // Prefix hits that sit in the free list leave it at Commit: they are not available.
  absl::flat_hash_set<BlockId> free_hits;
  for (BlockId id : plan.cached_blocks) {
    if (pool_.is_free(id)) free_hits.insert(id);
  }
  if (num_blocks + static_cast<int64_t>(free_hits.size()) > pool_.num_blocks_free()) {
    return false;
  }
  plan.new_blocks.reserve(static_cast<size_t>(num_blocks));
  for (BlockId id = pool_.FirstFree();
       id != kNoBlock && static_cast<int64_t>(plan.new_blocks.size()) < num_blocks;
       id = pool_.NextFree(id)) {
    if (!free_hits.contains(id)) plan.new_blocks.push_back(id);
  }
  TANDEM_CHECK(static_cast<int64_t>(plan.new_blocks.size()) == num_blocks);
  return true;
}

std::optional<AllocationPlan> BlockManager::PlanAllocate(SeqId seq_id,
                                                         std::span<const int32_t> token_ids,
                                                         int64_t num_new_tokens) const {
  TANDEM_CHECK(num_new_tokens >= 0) << "num_new_tokens " << num_new_tokens;
  AllocationPlan plan;
  plan.seq_id = seq_id;
  plan.manager_version = version_;
  plan.num_new_tokens = num_new_tokens;
  int64_t num_blocks_before = 0;
  bool copy_last_block = false;
  if (auto it = seqs_.find(seq_id); it == seqs_.end()) {
    plan.is_new_sequence = true;
    plan.num_query_tokens = static_cast<int64_t>(token_ids.size());
    PlanPrefixHits(token_ids, plan);
    plan.first_new_position = plan.num_cached_tokens;
    num_blocks_before = static_cast<int64_t>(plan.cached_blocks.size());
  } else {
    const SeqBlocks& s = it->second;
    plan.first_new_position = s.num_tokens;
    num_blocks_before = static_cast<int64_t>(s.blocks.size());
    // Writing into a partially filled block that another table shares would change that
    // table's KV: copy it first.
    copy_last_block = num_new_tokens > 0 && s.num_tokens % block_size_tokens() != 0 &&
                      pool_.ref_count(s.blocks.back()) > 1;
  }
  const int64_t num_blocks_after =
      CeilDiv(plan.first_new_position + num_new_tokens, block_size_tokens());
  const int64_t num_fresh = num_blocks_after - num_blocks_before + (copy_last_block ? 1 : 0);
  if (!PlanFreeBlocks(num_fresh, plan)) return std::nullopt;
  if (copy_last_block) {
    plan.copy_on_write = BlockCopy{.src = seq(seq_id).blocks.back(), .dst = plan.new_blocks[0]};
    plan.new_blocks.erase(plan.new_blocks.begin());
  }
  return plan;
}

std::span<const BlockId> BlockManager::block_table(SeqId seq_id) const {
  return seq(seq_id).blocks;
}

int64_t BlockManager::num_tokens(SeqId seq_id) const { return seq(seq_id).num_tokens; }

int32_t BlockManager::Slot(SeqId seq_id, int64_t position) const {
  const SeqBlocks& s = seq(seq_id);
  TANDEM_CHECK(position >= 0 && position < s.num_tokens)
      << "position " << position << " has no slot in sequence " << seq_id;
  const int64_t block_size = block_size_tokens();
  return static_cast<int32_t>(s.blocks[static_cast<size_t>(position / block_size)] * block_size +
                              position % block_size);
}

std::vector<uint64_t> BlockManager::CachedBlockHashes(size_t max_hashes) const {
  std::vector<uint64_t> hashes;
  for (BlockId id = 0; id < pool_.num_blocks_total() && hashes.size() < max_hashes; ++id) {
    if (pool_.is_cached(id)) hashes.push_back(pool_.cached_key(id).lo);
  }
  return hashes;
}

KvCacheStats BlockManager::stats() const {
  return KvCacheStats{.num_blocks_total = pool_.num_blocks_total(),
                      .num_blocks_free = pool_.num_blocks_free(),
                      .num_blocks_cached = pool_.num_blocks_cached(),
                      .prefix_cache_query_tokens = prefix_cache_query_tokens_,
                      .prefix_cache_hit_tokens = prefix_cache_hit_tokens_};
}

// --- Mutations -----------------------------------------------------------------------------

void BlockManager::CommitNewSequence(const AllocationPlan& plan) {
  TANDEM_CHECK(!Contains(plan.seq_id)) << "sequence " << plan.seq_id << " already exists";
  SeqBlocks& s = seqs_[plan.seq_id];
  for (BlockId id : plan.cached_blocks) {
    pool_.Acquire(id);
    s.blocks.push_back(id);
  }
  s.hashes = plan.cached_block_hashes;
  s.num_tokens = plan.num_cached_tokens;
  prefix_cache_query_tokens_ += plan.num_query_tokens;
  prefix_cache_hit_tokens_ += plan.num_cached_tokens;
}

void BlockManager::Commit(const AllocationPlan& plan) {
  TANDEM_CHECK(plan.manager_version == version_)
      << "stale AllocationPlan for sequence " << plan.seq_id
      << ": the block manager changed since it was planned";
  ++version_;
  if (plan.is_new_sequence) CommitNewSequence(plan);
  auto it = seqs_.find(plan.seq_id);
  TANDEM_CHECK(it != seqs_.end()) << "unknown sequence " << plan.seq_id;
  SeqBlocks& s = it->second;
  TANDEM_CHECK(s.num_tokens == plan.first_new_position);
  if (plan.copy_on_write) {
    TANDEM_CHECK(!s.blocks.empty() && s.blocks.back() == plan.copy_on_write->src);
    pool_.TakeFree(plan.copy_on_write->dst);
    pool_.Release(plan.copy_on_write->src);  // still held by the tables it is shared with
    s.blocks.back() = plan.copy_on_write->dst;
  }
  for (BlockId id : plan.new_blocks) {
    pool_.TakeFree(id);
    s.blocks.push_back(id);
  }
  s.num_tokens += plan.num_new_tokens;
  TANDEM_CHECK(static_cast<int64_t>(s.blocks.size()) == CeilDiv(s.num_tokens, block_size_tokens()));
}

void BlockManager::RegisterComputedTokens(SeqId seq_id, std::span<const int32_t> token_ids,
                                          int64_t num_computed_tokens) {
  auto it = seqs_.find(seq_id);
  TANDEM_CHECK(it != seqs_.end()) << "unknown sequence " << seq_id;
  SeqBlocks& s = it->second;
  TANDEM_CHECK(num_computed_tokens <= s.num_tokens &&
               num_computed_tokens <= static_cast<int64_t>(token_ids.size()))
      << "sequence " << seq_id << ": " << num_computed_tokens << " computed tokens, "
      << s.num_tokens << " slots, " << token_ids.size() << " token ids";
  ++version_;
  const int64_t num_full_blocks = num_computed_tokens / block_size_tokens();
  for (int64_t i = static_cast<int64_t>(s.hashes.size()); i < num_full_blocks; ++i) {
    const BlockHash parent = i == 0 ? kRootBlockHash : s.hashes[static_cast<size_t>(i - 1)];
    std::span<const int32_t> tokens = BlockTokens(token_ids, i);
    const BlockHash key = pool_.Hash(parent, tokens);
    // false: another block with this content is cached already; this one stays uncached
    // but the chain of keys continues (keys depend on content, not on block ids).
    pool_.MarkCached(s.blocks[static_cast<size_t>(i)], key, parent, tokens);
    s.hashes.push_back(key);
  }
}

void BlockManager::Fork(SeqId parent, SeqId child) {
  TANDEM_CHECK(!Contains(child)) << "fork target " << child << " already exists";
  SeqBlocks copy = seq(parent);
  for (BlockId id : copy.blocks) pool_.Acquire(id);
  seqs_.emplace(child, std::move(copy));
  ++version_;
}

void BlockManager::Free(SeqId seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return;
  const std::vector<BlockId>& blocks = it->second.blocks;
  // Last block first: cached blocks enter the free list's back in this order, so a shared
  // prefix is evicted after the continuations that depend on it.
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) pool_.Release(*b);
  seqs_.erase(it);
  ++version_;
}

void BlockManager::Pin(std::span<const BlockId> blocks) {
  for (BlockId id : blocks) pool_.Pin(id);
  ++version_;
}

void BlockManager::Unpin(std::span<const BlockId> blocks) {
  for (BlockId id : blocks) pool_.Unpin(id);
  ++version_;
}

// --- Invariants ----------------------------------------------------------------------------

absl::Status BlockManager::CheckSequence(SeqId seq_id, const SeqBlocks& s,
                                         std::vector<int32_t>& ref_counts) const {
  const int64_t block_size = block_size_tokens();
  if (static_cast<int64_t>(s.blocks.size()) != CeilDiv(s.num_tokens, block_size)) {
    return absl::InternalError(absl::StrCat("sequence ", seq_id, " has ", s.blocks.size(),
                                            " blocks for ", s.num_tokens, " tokens"));
  }
  if (static_cast<int64_t>(s.hashes.size()) > s.num_tokens / block_size) {
    return absl::InternalError(absl::StrCat("sequence ", seq_id, " registered ", s.hashes.size(),
                                            " blocks of ", s.num_tokens, " tokens"));
  }
  absl::flat_hash_set<BlockId> seen;
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const BlockId id = s.blocks[i];
    if (id < 0 || id >= num_blocks_total() || !seen.insert(id).second) {
      return absl::InternalError(
          absl::StrCat("sequence ", seq_id, " has bad or repeated block ", id, " at index ", i));
    }
    ++ref_counts[static_cast<size_t>(id)];
    if (i < s.hashes.size() && pool_.is_cached(id) && !(pool_.cached_key(id) == s.hashes[i])) {
      return absl::InternalError(
          absl::StrCat("sequence ", seq_id, " block ", id, " is cached under another key"));
    }
  }
  return absl::OkStatus();
}

absl::Status BlockManager::CheckInvariants() const {
  std::vector<int32_t> ref_counts(static_cast<size_t>(num_blocks_total()), 0);
  for (const auto& [seq_id, s] : seqs_) {
    TANDEM_RETURN_IF_ERROR(CheckSequence(seq_id, s, ref_counts));
  }
  TANDEM_RETURN_IF_ERROR(pool_.CheckInvariants(ref_counts));
  int32_t num_held = 0;
  for (BlockId id = 0; id < num_blocks_total(); ++id) {
    num_held += (pool_.ref_count(id) > 0 || pool_.pin_count(id) > 0) ? 1 : 0;
  }
  if (num_held + num_blocks_free() != num_blocks_total()) {
    return absl::InternalError(absl::StrCat(num_held, " held + ", num_blocks_free(),
                                            " free blocks != ", num_blocks_total()));
  }
  return absl::OkStatus();
}

}  // namespace tandem
