// Pipelined decode steps: the pending sampling, the continuation pass launched before its
// tokens reach the host, and the block frees that wait for a launched pass to finish.
//
// Step N's pass and sampling are queued on the device; the next Step launches pass N + 1
// with each sequence's input token fed from step N's sampler (FedTokenId) and only then
// waits for step N's tokens, runs the stop checks and streams them, and starts step N + 1's
// sampling with the sampling state that includes them (penalties, seeded draws). The device
// goes from pass to pass without waiting for the host. A sequence that stopped at step N
// wasted one row of pass N + 1; nothing of it is sampled or kept.
#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/engine/engine.h"
#include "common/engine/engine_record.h"
#include "common/logging.h"

namespace tandem {

Engine::Record* Engine::FindRecord(const std::string& request_id) {
  auto it = records_.find(request_id);
  return it == records_.end() ? nullptr : it->second.get();
}

Sequence* Engine::FindSequence(Record& record, SeqId seq_id) {
  for (auto& seq : record.group.seqs) {
    if (seq->id == seq_id) return seq.get();
  }
  return nullptr;
}

void Engine::StartSampling(const LogitsView& logits, const SampleBatchRows& rows) {
  TANDEM_CHECK(!pending_) << "a sampling is already pending";
  SamplingContext ctx{.vocab_size = config_.vocab_size, .eos_token_ids = config_.eos_token_ids};
  absl::Status status =
      runner_->StartSampleLogits(logits, rows.logits_rows, ctx, rows.sampling);
  if (!status.ok()) {
    FailRequests(rows.records, status);
    return;
  }
  std::vector<PendingRow> pending;
  pending.reserve(rows.seqs.size());
  for (size_t i = 0; i < rows.seqs.size(); ++i) {
    pending.push_back({.request_id = rows.records[i]->request.request_id,
                       .seq_id = rows.seqs[i]->id});
  }
  pending_ = std::move(pending);
  pending_generation_ = num_forwards_;
  pass_in_flight_ = false;  // the sampling's finish covers every pass before it
}

void Engine::CollectSampled() {
  std::vector<PendingRow> rows = std::move(*pending_);
  pending_.reset();
  absl::StatusOr<std::vector<SampledToken>> tokens = runner_->FinishSampleLogits();
  // Every pass launched before the sampling started is done.
  ReleaseDeferredFrees(pending_generation_);
  std::vector<std::string> touched;
  for (const PendingRow& row : rows) {
    if (std::find(touched.begin(), touched.end(), row.request_id) == touched.end()) {
      touched.push_back(row.request_id);
    }
  }
  if (!tokens.ok()) {
    std::vector<Record*> failed;
    for (const std::string& id : touched) {
      if (Record* record = FindRecord(id)) failed.push_back(record);
    }
    FailRequests(failed, tokens.status());
    return;
  }
  TANDEM_CHECK(tokens->size() == rows.size())
      << "the runner returned " << tokens->size() << " tokens for " << rows.size() << " rows";
  for (size_t i = 0; i < rows.size(); ++i) {
    Record* record = FindRecord(rows[i].request_id);
    Sequence* seq = record != nullptr ? FindSequence(*record, rows[i].seq_id) : nullptr;
    if (seq == nullptr || seq->finished) continue;  // aborted while the tokens were coming
    AcceptToken(*record, *seq, (*tokens)[i].token_id, std::move((*tokens)[i].logprobs));
  }
  for (const std::string& id : touched) {
    if (Record* record = FindRecord(id)) MaybeRetire(*record);
  }
}

bool Engine::LaunchContinuation(Continuation& next) {
  if (!pipeline_ || pending_->empty() || scheduler_.num_waiting() > 0) return false;
  absl::flat_hash_map<SeqId, int32_t> row_of;  // the pending row of each sequence
  for (size_t i = 0; i < pending_->size(); ++i) {
    row_of[(*pending_)[i].seq_id] = static_cast<int32_t>(i);
  }
  // Every running sequence must be waiting for exactly the pending token: then the next
  // step is one decode token each, whatever the tokens turn out to be.
  std::vector<std::pair<Record*, Sequence*>> members;
  for (SequenceGroup* group : scheduler_.running()) {
    for (auto& seq : group->seqs) {
      if (!row_of.contains(seq->id) || seq->finished || seq->num_uncomputed_tokens() != 0) {
        return false;
      }
    }
  }
  for (const PendingRow& row : *pending_) {
    Record* record = FindRecord(row.request_id);
    Sequence* seq = record != nullptr ? FindSequence(*record, row.seq_id) : nullptr;
    if (seq == nullptr || seq->finished) continue;  // aborted: nothing to continue
    if (record->phase != Record::Phase::kActive || record->beams || record->needs_fork ||
        seq->status != SequenceStatus::kRunning || seq->num_uncomputed_tokens() != 0) {
      return false;
    }
    // A sequence that surely ends with the pending token (its length limit) sits this one
    // out; a stop token or string is known only with the token, and costs one wasted row.
    const int64_t position = seq->num_tokens();
    if (seq->sampling.num_output_tokens() + 1 >= record->request.params.max_tokens ||
        position + 1 >= record->max_total_tokens ||
        position + 1 >= config_.max_position_embeddings) {
      continue;
    }
    members.emplace_back(record, seq);
  }
  if (members.empty()) return false;
  const auto n = static_cast<int64_t>(members.size());
  if (n > options_.scheduler.max_num_seqs || n > options_.scheduler.max_num_batched_tokens) {
    return false;
  }
  // One slot each; a shared last block (copy-on-write) or a full pool goes through the
  // scheduler instead (which may preempt, once this pass can no longer be running).
  int64_t new_blocks = 0;
  for (const auto& [record, seq] : members) {
    std::optional<AllocationPlan> plan = blocks_.PlanAllocate(seq->id, seq->token_ids, 1);
    if (!plan || plan->copy_on_write) return false;
    new_blocks += static_cast<int64_t>(plan->new_blocks.size());
  }
  if (new_blocks > blocks_.num_blocks_free()) return false;

  for (const auto& [record, seq] : members) {
    std::optional<AllocationPlan> plan = blocks_.PlanAllocate(seq->id, seq->token_ids, 1);
    TANDEM_CHECK(plan && !plan->copy_on_write && plan->first_new_position == seq->num_tokens());
    blocks_.Commit(*plan);
  }
  // Block tables only after every commit (a table's span lasts until the next mutation).
  std::vector<int32_t> tokens, positions, slots, query_start{0}, logits_rows;
  ForwardInputs inputs;
  for (const auto& [record, seq] : members) {
    const int64_t position = seq->num_tokens();
    logits_rows.push_back(static_cast<int32_t>(tokens.size()));
    tokens.push_back(FedTokenId(row_of.at(seq->id)));
    positions.push_back(static_cast<int32_t>(position));
    slots.push_back(blocks_.Slot(seq->id, position));
    query_start.push_back(static_cast<int32_t>(tokens.size()));
    inputs.block_tables.push_back(blocks_.block_table(seq->id));
    next.chunks.push_back({.request_id = record->request.request_id, .seq_id = seq->id});
    next.positions.push_back(position);
  }
  inputs.token_ids = tokens;
  inputs.positions = positions;
  inputs.slot_mapping = slots;
  inputs.query_start = query_start;
  inputs.logits_rows = logits_rows;
  inputs.logits_on_host = false;
  pass_in_flight_ = true;
  next.logits = runner_->Forward(inputs);
  if (next.logits.ok()) ++num_forwards_;
  ++num_pipelined_steps_;
  return true;
}

void Engine::FinishContinuation(Continuation& next) {
  SchedulerOutput computed;
  SampleBatchRows rows;
  std::vector<Record*> failed;
  for (size_t i = 0; i < next.chunks.size(); ++i) {
    Record* record = FindRecord(next.chunks[i].request_id);
    Sequence* seq = record != nullptr ? FindSequence(*record, next.chunks[i].seq_id) : nullptr;
    // Stopped with the collected token or aborted: its row is dropped (its blocks wait in
    // deferred_frees_ for this pass).
    if (seq == nullptr || seq->finished) continue;
    TANDEM_CHECK(seq->num_tokens() == next.positions[i] + 1 &&
                 seq->num_computed_tokens == next.positions[i])
        << "seq " << seq->id << " moved while its continuation ran";
    if (!next.logits.ok()) {
      failed.push_back(record);
      continue;
    }
    computed.chunks.push_back({.seq = seq, .first_position = next.positions[i], .num_tokens = 1,
                               .needs_logits = true});
    ++computed.num_tokens;
    rows.Add(*record, *seq, static_cast<int32_t>(i));
  }
  if (!next.logits.ok()) {
    TANDEM_LOG(ERROR) << "forward pass failed: " << next.logits.status();
    std::vector<std::string> ids;
    for (Record* record : failed) ids.push_back(record->request.request_id);
    for (const std::string& id : ids) {
      AbortCommand abort{id, absl::InternalError(absl::StrCat("model forward failed: ",
                                                              next.logits.status().message()))};
      Handle(abort);
    }
    return;  // Step's barrier releases what the aborts deferred
  }
  scheduler_.CommitComputed(computed);
  num_computed_tokens_ += computed.num_tokens;
  // Started even with no rows left: its finish is where this pass is known to be done.
  StartSampling(*next.logits, rows);
}

void Engine::FreeBlocks(SeqId seq_id) {
  if (pending_ || pass_in_flight_) {
    deferred_frees_.emplace_back(num_forwards_, seq_id);
  } else {
    blocks_.Free(seq_id);
  }
}

void Engine::FlushDeferredFrees() {
  if (deferred_frees_.empty()) {
    pass_in_flight_ = false;  // nothing freed since: a pass without logits waited for itself
    return;
  }
  // Frees deferred behind a pass no sampling followed (it failed, or its rows were aborted):
  // an empty sampling waits for that pass. Should even that fail (a lost device), the blocks
  // stay deferred and the next step tries again.
  const LogitsView none{.vocab_size = config_.vocab_size};
  if (runner_->StartSampleLogits(none, {}, {.vocab_size = config_.vocab_size}, {}).ok() &&
      runner_->FinishSampleLogits().ok()) {
    ReleaseDeferredFrees(num_forwards_);
    pass_in_flight_ = false;
  }
}

void Engine::ReleaseDeferredFrees(int64_t done_generation) {
  std::erase_if(deferred_frees_, [&](const std::pair<int64_t, SeqId>& entry) {
    if (entry.first > done_generation) return false;
    blocks_.Free(entry.second);
    return true;
  });
}

}  // namespace tandem
