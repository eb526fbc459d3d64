#include "common/engine/scheduler.h"

#include <algorithm>
#include <limits>

#include "common/logging.h"

namespace tandem {

Scheduler::Scheduler(const SchedulerOptions& options, BlockManager& blocks)
    : options_(options), blocks_(blocks) {}

void Scheduler::AddWaiting(SequenceGroup* group) {
  for (auto& seq : group->seqs) seq->status = SequenceStatus::kWaiting;
  waiting_.push_back(group);
}

void Scheduler::AddRunning(SequenceGroup* group) {
  for (auto& seq : group->seqs) seq->status = SequenceStatus::kRunning;
  running_.push_back(group);
}

void Scheduler::Remove(SequenceGroup* group) {
  std::erase(running_, group);
  std::erase(waiting_, group);
}

SchedulerOutput Scheduler::Schedule() {
  SchedulerOutput out;
  Budget budget{options_.max_num_batched_tokens, options_.max_num_seqs};
  for (size_t i = 0; i < running_.size();) {
    SequenceGroup* group = running_[i];
    bool preempted_self = false;
    while (!ScheduleRunning(group, budget, out)) {
      SequenceGroup* victim = running_.back();  // the newest running group
      Preempt(victim, out);
      if (victim == group) {
        preempted_self = true;
        break;
      }
    }
    if (!preempted_self) ++i;
  }
  // Admit only when nothing was preempted: a preempted group must not be overtaken.
  while (!waiting_.empty() && out.preempted.empty()) {
    SequenceGroup* group = waiting_.front();
    if (!ScheduleWaiting(group, budget, out)) break;  // first come, first served
    waiting_.pop_front();
    running_.push_back(group);
  }
  return out;
}

bool Scheduler::ScheduleRunning(SequenceGroup* group, Budget& budget, SchedulerOutput& out) {
  const int32_t num_seqs = static_cast<int32_t>(group->seqs.size());
  if (budget.seqs < num_seqs || budget.tokens <= 0) return true;  // sits this step out
  int64_t per_seq = group->seqs.front()->num_uncomputed_tokens();
  if (num_seqs > 1) {
    per_seq = 1;  // groups fork after their prompt: every member decodes one token
    if (budget.tokens < num_seqs) return true;
  } else {
    per_seq = std::min(per_seq, budget.tokens);  // a long prompt continues in chunks
  }
  if (per_seq <= 0) return true;
  if (BlocksNeeded(*group, per_seq) > blocks_.num_blocks_free()) return false;
  for (auto& seq : group->seqs) TANDEM_CHECK(Allocate(*seq, per_seq, out));
  budget.tokens -= per_seq * num_seqs;
  budget.seqs -= num_seqs;
  return true;
}

bool Scheduler::ScheduleWaiting(SequenceGroup* group, Budget& budget, SchedulerOutput& out) {
  const int32_t num_seqs = static_cast<int32_t>(group->seqs.size());
  if (budget.seqs < num_seqs || budget.tokens <= 0) return false;
  if (num_seqs == 1) {
    Sequence& seq = *group->seqs.front();
    int64_t cached = blocks_.CountCachedPrefixTokens(seq.token_ids);
    int64_t n = std::min(seq.num_tokens() - cached, budget.tokens);
    if (!Allocate(seq, n, out)) return false;
    budget.tokens -= n;
  } else {
    // A preempted group of forks re-enters whole: every member recomputes all its tokens.
    int64_t total = 0;
    for (auto& seq : group->seqs) total += seq->num_tokens();
    if (total > budget.tokens || BlocksNeeded(*group, -1) > blocks_.num_blocks_free()) {
      return false;
    }
    for (auto& seq : group->seqs) {
      int64_t cached = blocks_.CountCachedPrefixTokens(seq->token_ids);
      TANDEM_CHECK(Allocate(*seq, seq->num_tokens() - cached, out));
    }
    budget.tokens -= total;
  }
  budget.seqs -= num_seqs;
  for (auto& seq : group->seqs) seq->status = SequenceStatus::kRunning;
  return true;
}

bool Scheduler::Allocate(Sequence& seq, int64_t num_tokens, SchedulerOutput& out) {
  std::optional<AllocationPlan> plan = blocks_.PlanAllocate(seq.id, seq.token_ids, num_tokens);
  if (!plan) return false;
  blocks_.Commit(*plan);
  if (plan->is_new_sequence) {
    seq.num_computed_tokens = plan->num_cached_tokens;
    seq.num_cached_tokens = std::min(plan->num_cached_tokens, seq.num_prompt_tokens);
  }
  if (plan->copy_on_write) out.block_copies.push_back(*plan->copy_on_write);
  TANDEM_CHECK(seq.num_computed_tokens == plan->first_new_position)
      << "seq " << seq.id << " computed " << seq.num_computed_tokens << " but slots start at "
      << plan->first_new_position;
  out.chunks.push_back({.seq = &seq,
                        .first_position = seq.num_computed_tokens,
                        .num_tokens = num_tokens,
                        .needs_logits = seq.num_computed_tokens + num_tokens == seq.num_tokens()});
  out.num_tokens += num_tokens;
  return true;
}

// Free blocks the group's next step needs, planned as if each member were alone (an upper
// bound: a member committed first only frees sharing for the next). per_seq < 0: whole
// sequences (re-admission after preemption).
int64_t Scheduler::BlocksNeeded(const SequenceGroup& group, int64_t per_seq) const {
  int64_t total = 0;
  for (const auto& seq : group.seqs) {
    int64_t n = per_seq;
    if (n < 0) n = seq->num_tokens() - blocks_.CountCachedPrefixTokens(seq->token_ids);
    std::optional<AllocationPlan> plan = blocks_.PlanAllocate(seq->id, seq->token_ids, n);
    if (!plan) return std::numeric_limits<int64_t>::max();
    total += static_cast<int64_t>(plan->new_blocks.size()) + (plan->copy_on_write ? 1 : 0);
  }
  return total;
}

void Scheduler::Preempt(SequenceGroup* group, SchedulerOutput& out) {
  for (auto& seq : group->seqs) {
    blocks_.Free(seq->id);
    seq->num_computed_tokens = 0;
    seq->status = SequenceStatus::kWaiting;
  }
  ++group->num_preemptions;
  std::erase(running_, group);
  waiting_.push_front(group);
  out.preempted.push_back(group);
}

void Scheduler::CommitComputed(const SchedulerOutput& out) {
  for (const ScheduledChunk& chunk : out.chunks) {
    Sequence& seq = *chunk.seq;
    seq.num_computed_tokens += chunk.num_tokens;
    blocks_.RegisterComputedTokens(seq.id, seq.token_ids, seq.num_computed_tokens);
  }
}

}  // namespace tandem
