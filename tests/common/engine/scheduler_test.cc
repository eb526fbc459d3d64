// Scheduler timelines, step by step, over a real BlockManager (block size 4).
#include "common/engine/scheduler.h"

#include <numeric>

#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 4;

std::unique_ptr<SequenceGroup> Group(SeqId id, int64_t prompt_len, int32_t first_token = 0) {
  auto group = std::make_unique<SequenceGroup>();
  auto seq = std::make_unique<Sequence>();
  seq->id = id;
  seq->token_ids.resize(prompt_len);
  std::iota(seq->token_ids.begin(), seq->token_ids.end(), first_token);
  seq->num_prompt_tokens = prompt_len;
  group->seqs.push_back(std::move(seq));
  return group;
}

// Appends one "sampled" token to every sequence that got logits, as the engine would.
void FinishStep(Scheduler& scheduler, const SchedulerOutput& out) {
  scheduler.CommitComputed(out);
  for (const ScheduledChunk& c : out.chunks) {
    if (c.needs_logits) c.seq->token_ids.push_back(1000 + static_cast<int32_t>(c.seq->id));
  }
}

std::vector<std::pair<SeqId, int64_t>> Chunks(const SchedulerOutput& out) {
  std::vector<std::pair<SeqId, int64_t>> v;
  for (const ScheduledChunk& c : out.chunks) v.emplace_back(c.seq->id, c.num_tokens);
  return v;
}

TEST(SchedulerTest, ChunkedPrefillThenDecodeWithinTokenBudget) {
  BlockManager blocks({.num_blocks = 64, .block_size_tokens = kBlockSize});
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 8}, blocks);
  auto a = Group(1, 10), b = Group(2, 3, 100);
  scheduler.AddWaiting(a.get());
  scheduler.AddWaiting(b.get());
  // step 1: a's first chunk of 8 fills the budget; b waits
  SchedulerOutput out = scheduler.Schedule();
  EXPECT_EQ(Chunks(out), (std::vector<std::pair<SeqId, int64_t>>{{1, 8}}));
  EXPECT_FALSE(out.chunks[0].needs_logits);
  FinishStep(scheduler, out);
  // step 2: a's last 2 prompt tokens (logits), b's whole prompt of 3
  out = scheduler.Schedule();
  EXPECT_EQ(Chunks(out), (std::vector<std::pair<SeqId, int64_t>>{{1, 2}, {2, 3}}));
  EXPECT_TRUE(out.chunks[0].needs_logits && out.chunks[1].needs_logits);
  FinishStep(scheduler, out);
  // step 3: both decode one token
  out = scheduler.Schedule();
  EXPECT_EQ(Chunks(out), (std::vector<std::pair<SeqId, int64_t>>{{1, 1}, {2, 1}}));
  EXPECT_EQ(out.chunks[0].first_position, 10);
  EXPECT_EQ(out.chunks[1].first_position, 3);
  FinishStep(scheduler, out);
  EXPECT_TRUE(blocks.CheckInvariants().ok());
}

TEST(SchedulerTest, MaxNumSeqsHoldsBackNewcomers) {
  BlockManager blocks({.num_blocks = 64, .block_size_tokens = kBlockSize});
  Scheduler scheduler({.max_num_seqs = 2, .max_num_batched_tokens = 100}, blocks);
  auto a = Group(1, 2), b = Group(2, 2), c = Group(3, 2);
  for (auto* g : {a.get(), b.get(), c.get()}) scheduler.AddWaiting(g);
  SchedulerOutput out = scheduler.Schedule();
  EXPECT_EQ(Chunks(out), (std::vector<std::pair<SeqId, int64_t>>{{1, 2}, {2, 2}}));
  EXPECT_EQ(scheduler.num_waiting(), 1);
}

TEST(SchedulerTest, KvExhaustionPreemptsTheNewestAndResumesIt) {
  // 4 blocks of 4 tokens: a (7 tokens) and b (7 tokens) fit; growing past 8 each does not.
  BlockManager blocks({.num_blocks = 4, .block_size_tokens = kBlockSize});
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 64}, blocks);
  auto a = Group(1, 7), b = Group(2, 7, 50);
  scheduler.AddWaiting(a.get());
  scheduler.AddWaiting(b.get());
  // step 1: both prompts (4 blocks used)
  SchedulerOutput out = scheduler.Schedule();
  EXPECT_EQ(Chunks(out).size(), 2u);
  FinishStep(scheduler, out);
  // step 2: both decode at position 7 (still inside their second blocks)
  out = scheduler.Schedule();
  EXPECT_EQ(Chunks(out).size(), 2u);
  FinishStep(scheduler, out);
  // step 3: position 8 needs a third block each: b (newest) is preempted, a continues
  out = scheduler.Schedule();
  ASSERT_EQ(out.preempted.size(), 1u);
  EXPECT_EQ(out.preempted[0], b.get());
  EXPECT_EQ(Chunks(out), (std::vector<std::pair<SeqId, int64_t>>{{1, 1}}));
  EXPECT_EQ(b->seqs[0]->num_computed_tokens, 0);
  EXPECT_EQ(b->seqs[0]->num_tokens(), 9);  // keeps its prompt and generated tokens
  FinishStep(scheduler, out);
  EXPECT_TRUE(blocks.CheckInvariants().ok());
  // a finishes: its blocks return and b is recomputed: its first block (4 tokens) is still
  // in the prefix cache, so 5 of its 9 tokens are computed again
  scheduler.Remove(a.get());
  blocks.Free(1);
  out = scheduler.Schedule();
  EXPECT_EQ(Chunks(out), (std::vector<std::pair<SeqId, int64_t>>{{2, 5}}));
  EXPECT_EQ(out.chunks[0].first_position, 4);
  EXPECT_TRUE(out.chunks[0].needs_logits);
}

TEST(SchedulerTest, PrefixCacheHitSkipsCachedBlocks) {
  BlockManager blocks({.num_blocks = 16, .block_size_tokens = kBlockSize});
  Scheduler scheduler({.max_num_seqs = 8, .max_num_batched_tokens = 64}, blocks);
  auto a = Group(1, 10);
  scheduler.AddWaiting(a.get());
  FinishStep(scheduler, scheduler.Schedule());
  // b shares a's first 10 tokens: its two full blocks (8 tokens) come from the cache
  auto b = Group(2, 12);
  scheduler.AddWaiting(b.get());
  SchedulerOutput out = scheduler.Schedule();
  ASSERT_EQ(Chunks(out), (std::vector<std::pair<SeqId, int64_t>>{{1, 1}, {2, 4}}));
  EXPECT_EQ(out.chunks[1].first_position, 8);
  EXPECT_EQ(b->seqs[0]->num_cached_tokens, 8);
  EXPECT_TRUE(blocks.CheckInvariants().ok());
}

}  // namespace
}  // namespace tandem
