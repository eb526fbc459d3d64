// Block-manager scenarios, spelled out with block size 4. CheckInvariants after every op.
#include "common/kv_cache/block_manager.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 4;

std::vector<int32_t> Iota(int32_t n, int32_t first = 100) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<BlockId> Table(const BlockManager& m, SeqId seq) {
  std::span<const BlockId> t = m.block_table(seq);
  return {t.begin(), t.end()};
}

std::vector<BlockId> FreeOrder(const BlockManager& m) {
  std::vector<BlockId> order;
  for (BlockId id = m.pool().FirstFree(); id != kNoBlock; id = m.pool().NextFree(id)) {
    order.push_back(id);
  }
  return order;
}

class BlockManagerTest : public ::testing::Test {
 protected:
  explicit BlockManagerTest(int32_t num_blocks = 8, BlockHashFn hash_fn = &HashBlockTokens)
      : m_(BlockManagerOptions{
            .num_blocks = num_blocks, .block_size_tokens = kBlockSize, .hash_fn = hash_fn}) {}

  void TearDown() override { ExpectInvariants(); }

  void ExpectInvariants() {
    const absl::Status status = m_.CheckInvariants();
    ASSERT_TRUE(status.ok()) << status;
  }

  // Plans and commits; the plan must fit.
  AllocationPlan Allocate(SeqId seq, const std::vector<int32_t>& tokens, int64_t num_new_tokens) {
    std::optional<AllocationPlan> plan = m_.PlanAllocate(seq, tokens, num_new_tokens);
    EXPECT_TRUE(plan.has_value()) << "sequence " << seq << " does not fit";
    if (!plan) return {};
    ExpectInvariants();  // planning mutates nothing
    m_.Commit(*plan);
    ExpectInvariants();
    return *plan;
  }

  // A whole prompt: allocate what is not cached, "compute" it, register it.
  AllocationPlan Prefill(SeqId seq, const std::vector<int32_t>& tokens) {
    const int64_t num_new =
        static_cast<int64_t>(tokens.size()) - m_.CountCachedPrefixTokens(tokens);
    AllocationPlan plan = Allocate(seq, tokens, num_new);
    Register(seq, tokens, static_cast<int64_t>(tokens.size()));
    return plan;
  }

  void Register(SeqId seq, const std::vector<int32_t>& tokens, int64_t num_computed) {
    m_.RegisterComputedTokens(seq, tokens, num_computed);
    ExpectInvariants();
  }
  void Free(SeqId seq) {
    m_.Free(seq);
    ExpectInvariants();
  }
  void Fork(SeqId parent, SeqId child) {
    m_.Fork(parent, child);
    ExpectInvariants();
  }

  BlockManager m_;
};

TEST_F(BlockManagerTest, AllocatesCeilOfTokensOverBlockSizeInFreeListOrder) {
  // 10 tokens -> blocks 0, 1, 2 (the last holds 2 tokens).
  AllocationPlan plan = Allocate(/*seq=*/1, Iota(10), 10);
  EXPECT_TRUE(plan.is_new_sequence);
  EXPECT_EQ(plan.num_cached_tokens, 0);
  EXPECT_EQ(plan.first_new_position, 0);
  EXPECT_EQ(plan.new_blocks, (std::vector<BlockId>{0, 1, 2}));
  EXPECT_EQ(plan.copy_on_write, std::nullopt);
  EXPECT_EQ(Table(m_, 1), (std::vector<BlockId>{0, 1, 2}));
  EXPECT_EQ(m_.num_tokens(1), 10);
  EXPECT_EQ(m_.num_blocks_free(), 5);
  EXPECT_EQ(m_.Slot(1, 9), 2 * kBlockSize + 1);
}

TEST_F(BlockManagerTest, AppendsANewBlockOnlyAcrossABlockBoundary) {
  std::vector<int32_t> tokens = Iota(3);
  Allocate(1, tokens, 3);  // block 0 holds 3 of 4
  tokens.push_back(7);
  AllocationPlan fourth = Allocate(1, tokens, 1);  // fills block 0
  EXPECT_FALSE(fourth.is_new_sequence);
  EXPECT_EQ(fourth.first_new_position, 3);
  EXPECT_TRUE(fourth.new_blocks.empty());
  tokens.push_back(8);
  AllocationPlan fifth = Allocate(1, tokens, 1);  // position 4 starts block 1
  EXPECT_EQ(fifth.new_blocks, (std::vector<BlockId>{1}));
  EXPECT_EQ(Table(m_, 1), (std::vector<BlockId>{0, 1}));
  EXPECT_EQ(m_.Slot(1, 4), 1 * kBlockSize + 0);
  // A chunk of 9 more tokens from position 5 needs positions up to 13: blocks 2 and 3.
  AllocationPlan chunk = Allocate(1, tokens, 9);
  EXPECT_EQ(chunk.new_blocks, (std::vector<BlockId>{2, 3}));
  EXPECT_EQ(m_.num_tokens(1), 14);
}

TEST_F(BlockManagerTest, FreeReleasesTailFirstSoPrefixesAreEvictedLast) {
  const std::vector<int32_t> tokens = Iota(13);  // blocks 0,1,2 full + block 3 partial
  Prefill(1, tokens);
  EXPECT_EQ(m_.stats().num_blocks_cached, 3);
  Free(1);
  // Uncached partial block 3 is reused first; then the cached blocks, last block first.
  EXPECT_EQ(FreeOrder(m_), (std::vector<BlockId>{3, 4, 5, 6, 7, 2, 1, 0}));
  Free(1);       // idempotent
  m_.Abort(42);  // unknown: a no-op
  ExpectInvariants();
}

TEST_F(BlockManagerTest, PrefixHitReusesFullBlocksAndCounts) {
  const std::vector<int32_t> prompt = Iota(10);  // 2 full blocks + 2 tokens
  Prefill(1, prompt);
  std::vector<int32_t> longer = prompt;
  longer.insert(longer.end(), {1, 2, 3});
  EXPECT_EQ(m_.CountCachedPrefixTokens(longer), 8);
  AllocationPlan plan = Allocate(2, longer, 13 - 8);
  EXPECT_EQ(plan.num_cached_tokens, 8);
  EXPECT_EQ(plan.cached_blocks, (std::vector<BlockId>{0, 1}));
  EXPECT_EQ(plan.first_new_position, 8);
  EXPECT_EQ(plan.new_blocks, (std::vector<BlockId>{3, 4}));  // positions 8..12
  EXPECT_EQ(Table(m_, 2), (std::vector<BlockId>{0, 1, 3, 4}));
  EXPECT_EQ(m_.pool().ref_count(0), 2);
  const KvCacheStats stats = m_.stats();
  EXPECT_EQ(stats.prefix_cache_query_tokens, 10 + 13);
  EXPECT_EQ(stats.prefix_cache_hit_tokens, 8);
}

TEST_F(BlockManagerTest, NeverCachesTheWholePrompt) {
  const std::vector<int32_t> prompt = Iota(8);  // exactly 2 full blocks
  Prefill(1, prompt);
  // All 8 tokens are cached, but the last one must be computed for logits: 1 block hits.
  AllocationPlan plan = Allocate(2, prompt, 8 - m_.CountCachedPrefixTokens(prompt));
  EXPECT_EQ(plan.num_cached_tokens, 4);
  EXPECT_EQ(plan.num_new_tokens, 4);
  EXPECT_EQ(plan.new_blocks.size(), 1u);
  EXPECT_EQ(m_.CountCachedPrefixTokens(std::vector<int32_t>{}), 0);
}

TEST_F(BlockManagerTest, FreedCachedBlocksStillHitAndLeaveTheFreeList) {
  const std::vector<int32_t> prompt = Iota(9);
  Prefill(1, prompt);
  Free(1);
  EXPECT_EQ(m_.num_blocks_free(), 8);
  AllocationPlan plan = Allocate(2, prompt, 1);
  EXPECT_EQ(plan.cached_blocks, (std::vector<BlockId>{0, 1}));
  EXPECT_EQ(m_.num_blocks_free(), 5);  // 2 hits + 1 new block
  EXPECT_FALSE(m_.pool().is_free(0));
}

TEST_F(BlockManagerTest, OnlyRegisteredComputedBlocksHit) {
  const std::vector<int32_t> prompt = Iota(12);
  Allocate(1, prompt, 12);  // slots exist but no KV yet (e.g. a reservation)
  EXPECT_EQ(m_.CountCachedPrefixTokens(prompt), 0);
  Register(1, prompt, 5);  // KV of 5 tokens arrived: block 0 is complete
  EXPECT_EQ(m_.CountCachedPrefixTokens(prompt), 4);
  Register(1, prompt, 12);
  EXPECT_EQ(m_.CountCachedPrefixTokens(prompt), 8);
}

TEST_F(BlockManagerTest, ReusingACachedFreeBlockRemovesItsEntry) {
  const std::vector<int32_t> a = Iota(9, /*first=*/100);
  Prefill(1, a);  // caches blocks 0 and 1
  Free(1);
  EXPECT_EQ(m_.stats().num_blocks_cached, 2);
  // B takes every block: the uncached ones first, then evicts 1, then 0.
  Allocate(2, Iota(32, /*first=*/500), 32);
  EXPECT_EQ(m_.stats().num_blocks_cached, 0);
  EXPECT_EQ(m_.CountCachedPrefixTokens(a), 0);
  Free(2);
}

TEST_F(BlockManagerTest, DuplicateConcurrentPrefillsCacheOneCopy) {
  const std::vector<int32_t> prompt = Iota(9);
  Allocate(1, prompt, 9);  // both admitted in the same step: both miss
  Allocate(2, prompt, 9);
  Register(1, prompt, 9);
  Register(2, prompt, 9);  // same keys: seq 2's blocks stay uncached
  EXPECT_EQ(m_.stats().num_blocks_cached, 2);
  AllocationPlan plan = Allocate(3, prompt, 1);
  EXPECT_EQ(plan.cached_blocks, (std::vector<BlockId>{0, 1}));
}

TEST_F(BlockManagerTest, ForkSharesBlocksAndCopiesTheSharedPartialBlockOnWrite) {
  std::vector<int32_t> tokens = Iota(6);  // block 0 full, block 1 holds 2
  Prefill(1, tokens);
  Fork(1, 2);
  EXPECT_EQ(Table(m_, 2), (std::vector<BlockId>{0, 1}));
  EXPECT_EQ(m_.pool().ref_count(1), 2);
  EXPECT_EQ(m_.num_tokens(2), 6);
  // The child writes position 6 into shared block 1: copy it to a fresh block first.
  std::vector<int32_t> child = tokens;
  child.push_back(9);
  AllocationPlan plan = Allocate(2, child, 1);
  ASSERT_TRUE(plan.copy_on_write.has_value());
  EXPECT_EQ(*plan.copy_on_write, (BlockCopy{.src = 1, .dst = 2}));
  EXPECT_TRUE(plan.new_blocks.empty());
  EXPECT_EQ(Table(m_, 2), (std::vector<BlockId>{0, 2}));
  EXPECT_EQ(m_.pool().ref_count(1), 1);
  EXPECT_EQ(m_.pool().ref_count(0), 2);  // full blocks stay shared
  // The parent now owns block 1 alone and writes in place.
  tokens.push_back(8);
  AllocationPlan parent = Allocate(1, tokens, 1);
  EXPECT_EQ(parent.copy_on_write, std::nullopt);
  EXPECT_TRUE(parent.new_blocks.empty());
  Free(1);
  EXPECT_EQ(m_.pool().ref_count(0), 1);
  Free(2);
  EXPECT_EQ(m_.num_blocks_free(), 8);
}

TEST_F(BlockManagerTest, ForkAtABlockBoundaryNeedsNoCopy) {
  std::vector<int32_t> tokens = Iota(8);
  Prefill(1, tokens);
  Fork(1, 2);
  tokens.push_back(1);
  AllocationPlan plan = Allocate(2, tokens, 1);
  EXPECT_EQ(plan.copy_on_write, std::nullopt);
  EXPECT_EQ(plan.new_blocks.size(), 1u);
}

TEST_F(BlockManagerTest, PinnedBlocksOutliveTheirSequenceUntilUnpinned) {
  const std::vector<int32_t> prompt = Iota(8);
  Prefill(1, prompt);
  const std::vector<BlockId> sending = Table(m_, 1);  // the transfer pins what it reads
  m_.Pin(sending);
  ExpectInvariants();
  Free(1);  // aborted mid-transfer
  EXPECT_EQ(m_.num_blocks_free(), 6);
  // Nothing can take them: 7 blocks do not fit although 6 + 2 exist.
  EXPECT_EQ(m_.PlanAllocate(2, Iota(28, 900), 28), std::nullopt);
  AllocationPlan other = Allocate(3, Iota(24, 900), 24);
  for (BlockId id : other.new_blocks) EXPECT_NE(id, sending[0]);
  m_.Unpin(sending);
  ExpectInvariants();
  EXPECT_EQ(m_.num_blocks_free(), 2);
  EXPECT_TRUE(m_.pool().is_cached(sending[0]));  // still a prefix-cache entry
}

TEST_F(BlockManagerTest, OutOfBlocksIsNulloptAndChangesNothing) {
  Allocate(1, Iota(24), 24);  // 6 of 8 blocks
  EXPECT_EQ(m_.PlanAllocate(2, Iota(12, 500), 12), std::nullopt);
  EXPECT_FALSE(m_.Contains(2));
  EXPECT_EQ(m_.num_blocks_free(), 2);
  EXPECT_TRUE(m_.PlanAllocate(2, Iota(8, 500), 8).has_value());
  EXPECT_EQ(m_.stats().prefix_cache_query_tokens, 24);  // plans count nothing
}

TEST_F(BlockManagerTest, FreePrefixHitsCountAgainstAvailableBlocks) {
  const std::vector<int32_t> prompt = Iota(17);  // 4 full blocks + 1
  Prefill(1, prompt);
  Free(1);
  Allocate(2, Iota(12, 500), 12);  // 3 uncached blocks: 5 free left, 4 of them cached hits
  // Seq 3 hits 4 free cached blocks and needs 2 new ones: 6 > 5 free.
  std::vector<int32_t> longer = prompt;
  longer.insert(longer.end(), {1, 2, 3, 4});
  EXPECT_EQ(m_.PlanAllocate(3, longer, 21 - 16), std::nullopt);
  // With 1 new block it fits, and the new block is not one of the hits.
  AllocationPlan plan = Allocate(3, prompt, 1);
  EXPECT_EQ(plan.cached_blocks.size(), 4u);
  ASSERT_EQ(plan.new_blocks.size(), 1u);
  EXPECT_EQ(std::count(plan.cached_blocks.begin(), plan.cached_blocks.end(), plan.new_blocks[0]),
            0);
}

TEST_F(BlockManagerTest, ZeroTokenPlanOfAnExistingSequenceIsEmpty) {
  Allocate(1, Iota(5), 5);
  AllocationPlan plan = Allocate(1, Iota(5), 0);
  EXPECT_TRUE(plan.new_blocks.empty());
  EXPECT_EQ(m_.num_tokens(1), 5);
}

// A constant hash makes every block collide: only verification keeps content apart.
BlockHash CollideEverything(const BlockHash&, std::span<const int32_t>) { return {7, 7}; }

class CollidingHashTest : public BlockManagerTest {
 protected:
  CollidingHashTest() : BlockManagerTest(/*num_blocks=*/8, &CollideEverything) {}
};

TEST_F(CollidingHashTest, KeyHitWithOtherTokensIsAMiss) {
  Prefill(1, Iota(5, 100));  // caches block [100..103] under key {7,7}
  EXPECT_EQ(m_.CountCachedPrefixTokens(Iota(5, 200)), 0);
  AllocationPlan plan = Allocate(2, Iota(5, 200), 5);
  EXPECT_EQ(plan.num_cached_tokens, 0);
  EXPECT_EQ(m_.stats().prefix_cache_hit_tokens, 0);
  // The same tokens still hit.
  EXPECT_EQ(m_.CountCachedPrefixTokens(Iota(5, 100)), 4);
}

TEST_F(CollidingHashTest, LaterBlocksLoseTheirCollidingKey) {
  Prefill(1, {1, 2, 3, 4, 9, 9, 9, 9, 5});
  // Block 1 collides with block 0 and loses: only block 0 is cached.
  EXPECT_EQ(m_.stats().num_blocks_cached, 1);
  EXPECT_EQ(m_.CountCachedPrefixTokens(std::vector<int32_t>{1, 2, 3, 4, 9, 9, 9, 9, 5}), 4);
}

// Every key equals the root key, so a block's key and parent key match at every level.
BlockHash RootEverywhere(const BlockHash&, std::span<const int32_t>) { return kRootBlockHash; }

class RootHashTest : public BlockManagerTest {
 protected:
  RootHashTest() : BlockManagerTest(/*num_blocks=*/8, &RootEverywhere) {}
};

TEST_F(RootHashTest, ARepeatedBlockNeverHitsTwiceInOneTable) {
  Prefill(1, {9, 9, 9, 9, 1});  // block 0 = [9 9 9 9] cached under the root key
  // [9 9 9 9] [9 9 9 9] [9 9 9 9] 2: each level finds block 0 with matching parent and
  // tokens; taking it twice would put one block in two slots of a table.
  const std::vector<int32_t> repeated = {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 2};
  EXPECT_EQ(m_.CountCachedPrefixTokens(repeated), 4);
  AllocationPlan plan = Allocate(2, repeated, 9);
  EXPECT_EQ(plan.cached_blocks, (std::vector<BlockId>{0}));
}

TEST(BlockManagerDeathTest, StalePlanIsABug) {
  BlockManager m(BlockManagerOptions{.num_blocks = 4, .block_size_tokens = kBlockSize});
  std::optional<AllocationPlan> a = m.PlanAllocate(1, Iota(4), 4);
  std::optional<AllocationPlan> b = m.PlanAllocate(2, Iota(4), 4);
  m.Commit(*a);
  EXPECT_DEATH(m.Commit(*b), "stale AllocationPlan");
}

}  // namespace
}  // namespace tandem
