#include "common/kv_cache/block_pool.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 4;

std::vector<BlockId> FreeOrder(const BlockPool& pool) {
  std::vector<BlockId> order;
  for (BlockId id = pool.FirstFree(); id != kNoBlock; id = pool.NextFree(id)) order.push_back(id);
  return order;
}

// Tests hold block references by hand; this mirrors them for CheckInvariants.
class BlockPoolTest : public ::testing::Test {
 protected:
  BlockPool pool_{/*num_blocks=*/6, kBlockSize, &HashBlockTokens};
  std::vector<int32_t> refs_ = std::vector<int32_t>(6, 0);

  void Take(BlockId id) {
    pool_.TakeFree(id);
    refs_[static_cast<size_t>(id)] = 1;
    Check();
  }
  void Release(BlockId id) {
    pool_.Release(id);
    --refs_[static_cast<size_t>(id)];
    Check();
  }
  void Acquire(BlockId id) {
    pool_.Acquire(id);
    ++refs_[static_cast<size_t>(id)];
    Check();
  }
  void Cache(BlockId id, const std::vector<int32_t>& tokens, BlockHash parent = kRootBlockHash) {
    EXPECT_TRUE(pool_.MarkCached(id, pool_.Hash(parent, tokens), parent, tokens));
    Check();
  }
  void Check() { ASSERT_TRUE(pool_.CheckInvariants(refs_).ok()) << pool_.CheckInvariants(refs_); }
};

TEST_F(BlockPoolTest, StartsAllFreeInIdOrder) {
  EXPECT_EQ(pool_.num_blocks_total(), 6);
  EXPECT_EQ(pool_.num_blocks_free(), 6);
  EXPECT_EQ(FreeOrder(pool_), (std::vector<BlockId>{0, 1, 2, 3, 4, 5}));
  Check();
}

TEST_F(BlockPoolTest, UncachedReleaseGoesFrontCachedGoesBack) {
  Take(0);
  Take(1);
  Take(2);
  Cache(1, {1, 2, 3, 4});
  Release(0);  // uncached: reused first
  EXPECT_EQ(FreeOrder(pool_), (std::vector<BlockId>{0, 3, 4, 5}));
  Release(1);  // cached: evicted last
  EXPECT_EQ(FreeOrder(pool_), (std::vector<BlockId>{0, 3, 4, 5, 1}));
  Release(2);
  EXPECT_EQ(FreeOrder(pool_), (std::vector<BlockId>{2, 0, 3, 4, 5, 1}));
}

TEST_F(BlockPoolTest, CachedBlocksLeaveInLeastRecentlyFreedOrder) {
  for (BlockId id : {0, 1, 2}) Take(id);
  Cache(0, {1, 1, 1, 1});
  Cache(1, {2, 2, 2, 2});
  Cache(2, {3, 3, 3, 3});
  Release(2);
  Release(0);
  Release(1);
  EXPECT_EQ(FreeOrder(pool_), (std::vector<BlockId>{3, 4, 5, 2, 0, 1}));
}

TEST_F(BlockPoolTest, FindCachedVerifiesTokensAndParent) {
  const std::vector<int32_t> tokens = {5, 6, 7, 8};
  Take(0);
  Cache(0, tokens);
  const BlockHash key = pool_.Hash(kRootBlockHash, tokens);
  EXPECT_EQ(pool_.FindCached(key, kRootBlockHash, tokens), 0);
  // The same key with other tokens (a collision) or another parent is a miss.
  EXPECT_EQ(pool_.FindCached(key, kRootBlockHash, std::vector<int32_t>{5, 6, 7, 9}), std::nullopt);
  EXPECT_EQ(pool_.FindCached(key, BlockHash{1, 2}, tokens), std::nullopt);
  EXPECT_EQ(pool_.FindCached(BlockHash{3, 4}, kRootBlockHash, tokens), std::nullopt);
}

TEST_F(BlockPoolTest, ReusingACachedFreeBlockDropsItsEntry) {
  const std::vector<int32_t> tokens = {5, 6, 7, 8};
  const BlockHash key = pool_.Hash(kRootBlockHash, tokens);
  Take(3);
  Cache(3, tokens);
  Release(3);
  EXPECT_EQ(pool_.num_blocks_cached(), 1);
  EXPECT_EQ(pool_.FindCached(key, kRootBlockHash, tokens), 3);  // free but still cached
  Take(3);                                                      // reused for other content
  EXPECT_EQ(pool_.num_blocks_cached(), 0);
  EXPECT_FALSE(pool_.is_cached(3));
  EXPECT_EQ(pool_.FindCached(key, kRootBlockHash, tokens), std::nullopt);
}

TEST_F(BlockPoolTest, AcquireOfAFreeCachedBlockTakesItOutOfTheFreeList) {
  Take(2);
  Cache(2, {1, 2, 3, 4});
  Release(2);
  EXPECT_TRUE(pool_.is_free(2));
  Acquire(2);
  EXPECT_FALSE(pool_.is_free(2));
  EXPECT_TRUE(pool_.is_cached(2));
  EXPECT_EQ(pool_.num_blocks_free(), 5);
}

TEST_F(BlockPoolTest, DuplicateContentKeepsTheFirstBlock) {
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const BlockHash key = pool_.Hash(kRootBlockHash, tokens);
  Take(0);
  Take(1);
  Cache(0, tokens);
  EXPECT_FALSE(pool_.MarkCached(1, key, kRootBlockHash, tokens));
  EXPECT_FALSE(pool_.is_cached(1));
  EXPECT_EQ(pool_.FindCached(key, kRootBlockHash, tokens), 0);
  EXPECT_TRUE(pool_.MarkCached(0, key, kRootBlockHash, tokens));  // again: a no-op
  Check();
}

TEST_F(BlockPoolTest, PinKeepsABlockOutOfTheFreeListAtRefZero) {
  Take(0);
  pool_.Pin(0);
  Release(0);  // the sequence is gone, the transfer is not
  EXPECT_FALSE(pool_.is_free(0));
  EXPECT_EQ(pool_.num_blocks_free(), 5);
  pool_.Pin(0);
  pool_.Unpin(0);
  EXPECT_FALSE(pool_.is_free(0));  // one pin left
  pool_.Unpin(0);
  EXPECT_TRUE(pool_.is_free(0));
  Check();
  pool_.Pin(4);  // a free block leaves the free list while pinned
  EXPECT_FALSE(pool_.is_free(4));
  Check();
  pool_.Unpin(4);
  Check();
}

TEST_F(BlockPoolTest, CheckInvariantsReportsWrongRefCounts) {
  Take(1);
  refs_[1] = 2;
  const absl::Status status = pool_.CheckInvariants(refs_);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(std::string(status.message()).find("block 1 has ref_count 1"), std::string::npos)
      << status;
}

TEST(BlockPoolDeathTest, MisuseIsABug) {
  BlockPool pool(2, kBlockSize, &HashBlockTokens);
  EXPECT_DEATH(pool.Release(0), "unreferenced");
  EXPECT_DEATH(pool.Unpin(0), "unpinned");
  pool.TakeFree(0);
  EXPECT_DEATH(pool.TakeFree(0), "not free");
}

}  // namespace
}  // namespace tandem
