// Decides, each step, how many tokens every sequence computes (vLLM v1's model: a running
// prompt gets a chunk, a decoding sequence gets one token), within a token budget and a
// sequence limit, and allocates their KV slots through the BlockManager.
//
// Called only by the engine thread. Groups step together: every live sequence of a group is
// scheduled, or none. When KV runs out the newest running group is preempted by recompute:
// its blocks are freed, its sequences keep their tokens and go back to the front of the
// waiting queue, and they are prefilled again (seeded sampling makes the continuation
// identical). Running groups are served before waiting ones, oldest first.
#pragma once

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

#include "common/engine/sequence.h"
#include "common/kv_cache/block_manager.h"

namespace tandem {

struct SchedulerOptions {
  int32_t max_num_seqs = 64;             // sequences in one step
  int64_t max_num_batched_tokens = 512;  // tokens in one step (chunked prefill above it)
};

struct ScheduledChunk {
  Sequence* seq = nullptr;
  int64_t first_position = 0;  // == seq->num_computed_tokens before the step
  int64_t num_tokens = 0;
  bool needs_logits = false;   // the chunk reaches the last known token
};

struct SchedulerOutput {
  std::vector<ScheduledChunk> chunks;      // in running order
  std::vector<BlockCopy> block_copies;     // copy-on-write, before the forward pass
  std::vector<SequenceGroup*> preempted;   // this step
  int64_t num_tokens = 0;
  bool empty() const { return chunks.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, BlockManager& blocks);

  void AddWaiting(SequenceGroup* group);
  // A group whose blocks and computed KV already exist (decode role: KV arrived).
  void AddRunning(SequenceGroup* group);
  // Forgets the group wherever it is (abort or finish); the caller frees its blocks.
  void Remove(SequenceGroup* group);
  SchedulerOutput Schedule();
  // After the forward pass: the chunks' KV is computed (the scheduler owns the counter).
  void CommitComputed(const SchedulerOutput& out);

  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t num_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  std::span<SequenceGroup* const> running() const { return running_; }

 private:
  struct Budget {
    int64_t tokens;
    int32_t seqs;
  };
  bool ScheduleRunning(SequenceGroup* group, Budget& budget, SchedulerOutput& out);
  bool ScheduleWaiting(SequenceGroup* group, Budget& budget, SchedulerOutput& out);
  // Slots for one sequence's next chunk; false when the free blocks do not suffice.
  bool Allocate(Sequence& seq, int64_t num_tokens, SchedulerOutput& out);
  int64_t BlocksNeeded(const SequenceGroup& group, int64_t budget_tokens) const;
  void Preempt(SequenceGroup* group, SchedulerOutput& out);

  const SchedulerOptions options_;
  BlockManager& blocks_;
  std::deque<SequenceGroup*> waiting_;
  std::vector<SequenceGroup*> running_;  // admission order: back is the newest
};

}  // namespace tandem
