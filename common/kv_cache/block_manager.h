// Per-worker paged-KV bookkeeping: one block table per sequence over a BlockPool, prefix
// caching of full blocks, copy-on-write forks, pins for KV transfers.
//
// Who calls: the engine thread that owns it (scheduler and engine loop); no locks. Nothing
// here touches KV bytes: the plan tells the engine which copies the runner must do.
//
// Plan, then commit. PlanAllocate is const and returns plain data (or nullopt: "does not fit"
// is a scheduling outcome, not an error); Commit applies exactly that plan. A plan is valid
// until the next mutation (Commit CHECKs it), so plan and commit one sequence at a time.
//
// Mutations, all on the engine thread: Commit, RegisterComputedTokens, Fork, Free/Abort,
// Pin, Unpin. Each one leaves CheckInvariants() OK.
//
// Life of a sequence:
//   CountCachedPrefixTokens(ids)            how much of a prompt is cached (read-only)
//   PlanAllocate(seq, ids, n) + Commit      first call: table = prefix hits + n new slots;
//                                           later calls: n more slots (append)
//   runner fills the KV of those slots
//   RegisterComputedTokens(seq, ids, k)     tokens [0, k) now hold KV: full blocks among
//                                           them become prefix-cache entries
//   Fork(seq, child)                        child shares every block (copy-on-write)
//   Free(seq)                               idempotent; Abort is the same
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/kv_cache/allocation_plan.h"
#include "common/kv_cache/block_hash.h"
#include "common/kv_cache/block_ids.h"
#include "common/kv_cache/block_pool.h"

namespace tandem {

struct BlockManagerOptions {
  int32_t num_blocks = 0;
  int32_t block_size_tokens = 16;
  BlockHashFn hash_fn = &HashBlockTokens;  // tests substitute a colliding one
};

// Plain-data snapshot for metrics and load reports.
struct KvCacheStats {
  int32_t num_blocks_total = 0;
  int32_t num_blocks_free = 0;            // reusable now, cached ones included
  int32_t num_blocks_cached = 0;          // in the prefix cache (in use or free)
  int64_t prefix_cache_query_tokens = 0;  // prompt tokens looked up by committed new sequences
  int64_t prefix_cache_hit_tokens = 0;    // of those, tokens whose KV was reused
};

class BlockManager {
 public:
  explicit BlockManager(const BlockManagerOptions& options);

  // --- Queries (const) -------------------------------------------------------------------
  // Leading tokens of `token_ids` a new sequence would reuse: whole cached blocks whose
  // tokens match, and never all of token_ids (at least one token is left to compute).
  int64_t CountCachedPrefixTokens(std::span<const int32_t> token_ids) const;

  // Plans slots for `num_new_tokens` more tokens of `seq_id`.
  //  - New sequence: `token_ids` (all its tokens so far) is looked up in the prefix cache;
  //    the slots start after the cached prefix. The scheduler that chunks a prompt takes
  //    num_new_tokens <= token_ids.size() - CountCachedPrefixTokens(token_ids).
  //  - Existing sequence: slots start at num_tokens(seq_id); `token_ids` is not read.
  //    A shared, partially filled last block yields plan.copy_on_write.
  // nullopt when the free blocks do not suffice.
  std::optional<AllocationPlan> PlanAllocate(SeqId seq_id, std::span<const int32_t> token_ids,
                                             int64_t num_new_tokens) const;

  bool Contains(SeqId seq_id) const { return seqs_.contains(seq_id); }
  // [ceil(num_tokens / block_size_tokens)] block ids; valid until the next mutation.
  std::span<const BlockId> block_table(SeqId seq_id) const;
  // Slots allocated to the sequence (positions [0, num_tokens) have a slot).
  int64_t num_tokens(SeqId seq_id) const;
  // block_table[position / block_size] * block_size + position % block_size.
  int32_t Slot(SeqId seq_id, int64_t position) const;
  int32_t num_seqs() const { return static_cast<int32_t>(seqs_.size()); }

  int32_t block_size_tokens() const { return pool_.block_size_tokens(); }
  int32_t num_blocks_total() const { return pool_.num_blocks_total(); }
  int32_t num_blocks_free() const { return pool_.num_blocks_free(); }
  KvCacheStats stats() const;
  // Low 64 bits of the chained keys of up to `max_hashes` cached blocks (in use or free):
  // the prefix-cache summary a router's prefix-affinity policy scores workers by.
  std::vector<uint64_t> CachedBlockHashes(size_t max_hashes) const;
  const BlockPool& pool() const { return pool_; }

  // Ref counts equal the number of tables holding each block; the free list holds exactly
  // the unreferenced unpinned blocks; cache entries verify; tables have the right length
  // and no block twice; registered keys match the pool's. Tests call it after every op.
  absl::Status CheckInvariants() const;

  // --- Mutations -------------------------------------------------------------------------
  // Applies a plan from PlanAllocate. CHECK-fails on a stale plan (any mutation since).
  void Commit(const AllocationPlan& plan);

  // Declares that the KV of tokens [0, num_computed_tokens) of `seq_id` has been written
  // (after the forward pass, or when a KV transfer completed). Full blocks among them are
  // registered in the prefix cache. Requires num_computed_tokens <= num_tokens(seq_id) and
  // <= token_ids.size(); `token_ids` are the sequence's tokens. Calls may repeat.
  void RegisterComputedTokens(SeqId seq_id, std::span<const int32_t> token_ids,
                              int64_t num_computed_tokens);

  // `child` (which must not exist) gets `parent`'s table; every block's ref count goes up.
  // Never allocates: the first write into a shared partial block is copied by a later plan.
  void Fork(SeqId parent, SeqId child);

  // Drops the sequence's table, releasing its blocks last-first so that, in the free list,
  // a prefix outlives its continuations. Unknown ids are a no-op (cleanup is idempotent).
  void Free(SeqId seq_id);
  void Abort(SeqId seq_id) { Free(seq_id); }  // the same as Free; named for cancel paths

  // A transfer pins the blocks whose bytes it reads or writes; they are not reused until
  // the matching Unpin, even if their sequence is freed meanwhile. Each Pin needs exactly
  // one Unpin of the same ids. Valid for any block id.
  void Pin(std::span<const BlockId> blocks);
  void Unpin(std::span<const BlockId> blocks);

 private:
  struct SeqBlocks {
    std::vector<BlockId> blocks;
    int64_t num_tokens = 0;
    // Chained keys of the leading full blocks already registered (prefix hits included).
    std::vector<BlockHash> hashes;
  };

  const SeqBlocks& seq(SeqId seq_id) const;
  void PlanPrefixHits(std::span<const int32_t> token_ids, AllocationPlan& plan) const;
  bool PlanFreeBlocks(int64_t num_blocks, AllocationPlan& plan) const;
  void CommitNewSequence(const AllocationPlan& plan);
  absl::Status CheckSequence(SeqId seq_id, const SeqBlocks& s,
                             std::vector<int32_t>& ref_counts) const;
  std::span<const int32_t> BlockTokens(std::span<const int32_t> token_ids,
                                       int64_t block_index) const;

  BlockPool pool_;
  absl::flat_hash_map<SeqId, SeqBlocks> seqs_;
  uint64_t version_ = 0;
  int64_t prefix_cache_query_tokens_ = 0;
  int64_t prefix_cache_hit_tokens_ = 0;
};

}  // namespace tandem
