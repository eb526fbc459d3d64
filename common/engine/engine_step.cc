// One step's forward pass and everything after it: sampling, n > 1 and beam forks, stop
// checks, outputs, and sweeping finished sequences.
#include <algorithm>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/engine/engine.h"
#include "common/engine/engine_record.h"
#include "common/logging.h"
#include "common/sampling/logits_processors.h"
#include "common/sampling/sampler.h"

namespace tandem {
namespace {

// ForwardInputs for the scheduled chunks; spans point into `storage` and the block manager.
struct StepInputs {
  std::vector<int32_t> tokens, positions, slots, query_start, logits_rows;
  ForwardInputs inputs;
};

void BuildInputs(const SchedulerOutput& out, const BlockManager& blocks, StepInputs& s) {
  s.query_start.push_back(0);
  for (const ScheduledChunk& chunk : out.chunks) {
    const Sequence& seq = *chunk.seq;
    for (int64_t i = 0; i < chunk.num_tokens; ++i) {
      int64_t pos = chunk.first_position + i;
      s.tokens.push_back(seq.token_ids[pos]);
      s.positions.push_back(static_cast<int32_t>(pos));
      s.slots.push_back(blocks.Slot(seq.id, pos));
    }
    s.query_start.push_back(static_cast<int32_t>(s.tokens.size()));
    if (chunk.needs_logits) s.logits_rows.push_back(static_cast<int32_t>(s.tokens.size()) - 1);
    s.inputs.block_tables.push_back(blocks.block_table(seq.id));
  }
  s.inputs.token_ids = s.tokens;
  s.inputs.positions = s.positions;
  s.inputs.slot_mapping = s.slots;
  s.inputs.query_start = s.query_start;
  s.inputs.logits_rows = s.logits_rows;
  // The engine reads logits only through SampleLogits / CopyLogitsRows: a device runner
  // samples where they are.
  s.inputs.logits_on_host = false;
}

std::unique_ptr<Sequence> CloneForBeam(const Sequence& parent, SeqId id) {
  auto child = std::make_unique<Sequence>();
  child->id = id;
  child->token_ids = parent.token_ids;
  child->num_prompt_tokens = parent.num_prompt_tokens;
  child->num_computed_tokens = parent.num_computed_tokens;
  child->num_cached_tokens = parent.num_cached_tokens;
  child->status = parent.status;
  child->sampling = parent.sampling;
  return child;
}

}  // namespace

void Engine::RunForward(const SchedulerOutput& out) {
  absl::Time now = absl::Now();
  // Built once per step: records and sequences do not change until ProcessLogits.
  absl::flat_hash_map<const Sequence*, Record*> owner;
  for (auto& [id, record] : records_) {
    for (auto& seq : record->group.seqs) owner[seq.get()] = record.get();
  }
  for (const ScheduledChunk& c : out.chunks) {
    Record& r = *owner.at(c.seq);
    if (!r.first_scheduled) r.first_scheduled = now;
  }
  absl::Status status = out.block_copies.empty() ? absl::OkStatus()
                                                  : runner_->CopyBlocks(out.block_copies);
  StepInputs step;
  BuildInputs(out, blocks_, step);
  std::shared_ptr<KvLayerProgress> progress;
  if (options_.role == EngineRole::kPrefillOnly && status.ok()) {
    progress = std::make_shared<KvLayerProgress>(kv_layout_.num_layers);
    step.inputs.kv_progress = progress.get();
    HandOffKv(out, progress, owner);
  }
  if (status.ok()) pass_in_flight_ = true;  // until a sampling starts after it
  absl::StatusOr<LogitsView> logits =
      status.ok() ? runner_->Forward(step.inputs) : absl::StatusOr<LogitsView>(status);
  if (logits.ok()) ++num_forwards_;
  if (progress) {
    if (logits.ok()) {
      progress->Complete();
    } else {
      progress->Fail(absl::InternalError(absl::StrCat("prefill forward pass failed: ",
                                                      logits.status().message())));
    }
  }
  if (!logits.ok()) {
    TANDEM_LOG(ERROR) << "forward pass failed: " << logits.status();
    std::vector<std::string> failed;
    for (const ScheduledChunk& c : out.chunks) failed.push_back(owner.at(c.seq)->request.request_id);
    for (const std::string& id : failed) {
      AbortCommand abort{id, absl::InternalError(absl::StrCat("model forward failed: ",
                                                              logits.status().message()))};
      Handle(abort);
    }
    return;
  }
  scheduler_.CommitComputed(out);
  num_computed_tokens_ += out.num_tokens;
  ProcessLogits(out, *logits, owner);
}

void Engine::HandOffKv(const SchedulerOutput& out,
                       const std::shared_ptr<KvLayerProgress>& progress,
                       const absl::flat_hash_map<const Sequence*, Record*>& owner) {
  for (const ScheduledChunk& c : out.chunks) {
    if (!c.needs_logits) continue;  // the prompt's last chunk is the one that samples
    Record& record = *owner.at(c.seq);
    if (!record.held_blocks.empty()) continue;
    EngineOutput handoff = BaseOutput(record, *c.seq);
    std::span<const BlockId> table = blocks_.block_table(c.seq->id);
    handoff.kv_blocks.assign(table.begin(), table.end());
    handoff.kv_num_tokens = c.first_position + c.num_tokens;
    handoff.kv_progress = progress;
    blocks_.Pin(handoff.kv_blocks);
    record.held_blocks = handoff.kv_blocks;
    record.request.sink->OnOutput(std::move(handoff));
  }
}

void Engine::ProcessLogits(const SchedulerOutput& out, const LogitsView& logits,
                           const absl::flat_hash_map<const Sequence*, Record*>& owner) {
  SampleBatchRows sample_rows;
  absl::flat_hash_map<Record*, std::vector<int32_t>> beam_rows;
  absl::flat_hash_set<std::string> touched;  // ids: a record may retire while we sweep
  int32_t row = 0;
  for (const ScheduledChunk& c : out.chunks) {
    if (!c.needs_logits) continue;
    const int32_t logits_row = row++;
    Record& record = *owner.at(c.seq);
    touched.insert(record.request.request_id);
    bool fans_out = record.request.params.n > 1 || record.beams.has_value();
    if (options_.role == EngineRole::kPrefillOnly && fans_out) {
      FinishPrefill(record, *c.seq, -1, std::nullopt);  // the decode worker fans out
    } else if (record.beams) {
      beam_rows[&record].push_back(logits_row);
    } else if (record.needs_fork) {
      ForkSamples(record);
      for (auto& seq : record.group.seqs) sample_rows.Add(record, *seq, logits_row);
    } else {
      sample_rows.Add(record, *c.seq, logits_row);
    }
  }
  // Beams copy their rows to the host first; the sampled rows' tokens are collected now
  // (CollectSampled) or, pipelined, at the start of the next step.
  for (auto& [record, rows] : beam_rows) StepBeams(*record, logits, rows);
  if (!sample_rows.seqs.empty()) StartSampling(logits, sample_rows);
  for (const std::string& id : touched) {
    auto it = records_.find(id);
    if (it != records_.end()) MaybeRetire(*it->second);
  }
}

void Engine::SampleBatchRows::Add(Record& record, Sequence& seq, int32_t logits_row) {
  logits_rows.push_back(logits_row);
  sampling.push_back({.params = &record.request.params, .state = &seq.sampling});
  records.push_back(&record);
  seqs.push_back(&seq);
}

void Engine::FailRequests(std::span<Record* const> records, const absl::Status& status) {
  TANDEM_LOG(ERROR) << "sampling failed: " << status;
  std::vector<std::string> ids;
  for (Record* record : records) {
    if (std::find(ids.begin(), ids.end(), record->request.request_id) == ids.end()) {
      ids.push_back(record->request.request_id);
    }
  }
  for (const std::string& id : ids) {
    AbortCommand abort{id,
                       absl::InternalError(absl::StrCat("sampling failed: ", status.message()))};
    Handle(abort);
  }
}

void Engine::ForkSamples(Record& record) {
  record.needs_fork = false;
  Sequence& root = *record.group.seqs.front();
  const EngineRequest& r = record.request;
  std::vector<SequenceSamplingState> states = MakeSampleStates(r.prompt_ids, r.seed, r.params.n);
  root.sampling = states[0];
  for (int32_t i = 1; i < r.params.n; ++i) {
    Sequence& child = NewSequence(record, i);
    child.token_ids = root.token_ids;
    child.num_prompt_tokens = root.num_prompt_tokens;
    child.num_computed_tokens = root.num_computed_tokens;
    child.num_cached_tokens = root.num_cached_tokens;
    child.status = root.status;
    child.sampling = states[i];
    child.stop = std::make_unique<StopChecker>(*tokenizer_, r.params, config_.eos_token_ids,
                                               r.prompt_ids, r.skip_special_tokens);
    blocks_.Fork(root.id, child.id);
  }
}

void Engine::AcceptToken(Record& record, Sequence& seq, int32_t token,
                         std::optional<SampledLogprobs> logprobs) {
  if (!record.first_token) record.first_token = absl::Now();
  if (options_.role == EngineRole::kPrefillOnly) {
    FinishPrefill(record, seq, token, std::move(logprobs));
    return;
  }
  seq.token_ids.push_back(token);
  AppendToken(seq.sampling, token);
  StopVerdict verdict = seq.stop->Push(seq.sampling, token);
  if (!verdict.finish && seq.num_tokens() >= config_.max_position_embeddings) {
    StopVerdict tail = seq.stop->EndForLength(seq.sampling);
    verdict.text += tail.text;
    verdict.finish = tail.finish;
    verdict.stop_string = tail.stop_string;
  }
  EngineOutput out = BaseOutput(record, seq);
  out.token_ids = {token};
  out.text = std::move(verdict.text);
  if (logprobs) out.logprobs.push_back(std::move(*logprobs));
  if (verdict.finish) {
    out.finish = *verdict.finish == FinishReason::kStop ? OutputFinish::kStop : OutputFinish::kLength;
    out.stop = verdict.stop_token_id ? absl::StrCat(*verdict.stop_token_id) : verdict.stop_string;
    seq.finished = true;
  }
  record.request.sink->OnOutput(std::move(out));
}

// The first token after the KV hand-off (HandOffKv, before this step's forward pass).
void Engine::FinishPrefill(Record& record, Sequence& seq, int32_t token,
                           std::optional<SampledLogprobs> logprobs) {
  TANDEM_CHECK(!record.held_blocks.empty()) << "prefill finished without a KV hand-off";
  EngineOutput out = BaseOutput(record, seq);
  if (token >= 0) out.token_ids = {token};
  if (logprobs) out.logprobs.push_back(std::move(*logprobs));
  record.phase = Record::Phase::kHeld;
  seq.finished = true;
  record.request.sink->OnOutput(std::move(out));
}

void Engine::StepBeams(Record& record, const LogitsView& logits,
                       std::span<const int32_t> rows) {
  const int64_t vocab = config_.vocab_size;
  std::vector<float> batch(rows.size() * static_cast<size_t>(vocab));
  if (absl::Status s = runner_->CopyLogitsRows(logits, rows, batch); !s.ok()) {
    Record* failed = &record;
    FailRequests({&failed, 1}, s);
    return;
  }
  std::vector<SamplingRow> sampling_rows;
  for (size_t b = 0; b < rows.size(); ++b) {
    LogSoftmaxInPlace(std::span(batch).subspan(b * vocab, vocab));
    sampling_rows.push_back({&record.request.params, &record.group.seqs[b]->sampling});
  }
  SamplingContext ctx{.vocab_size = vocab, .eos_token_ids = config_.eos_token_ids};
  ApplyLogitsProcessors(batch, ctx, sampling_rows);
  std::vector<BeamFork> forks = record.beams->Step(batch, vocab);
  if (record.beams->done()) {
    FinishBeams(record);
    return;
  }
  std::vector<std::unique_ptr<Sequence>> old = std::move(record.group.seqs);
  std::vector<std::unique_ptr<Sequence>> next(forks.size());
  std::vector<bool> claimed(old.size(), false);
  for (size_t i = 0; i < forks.size(); ++i) {  // copies first, from unmodified parents
    int32_t p = forks[i].parent;
    if (!claimed[p]) {
      claimed[p] = true;
      continue;
    }
    next[i] = CloneForBeam(*old[p], next_seq_id_++);
    blocks_.Fork(old[p]->id, next[i]->id);
  }
  for (size_t i = 0; i < forks.size(); ++i) {
    if (!next[i]) next[i] = std::move(old[forks[i].parent]);
  }
  for (auto& unused : old) {
    if (unused) FreeBlocks(unused->id);
  }
  for (size_t i = 0; i < forks.size(); ++i) {
    next[i]->index = static_cast<int32_t>(i);
    next[i]->token_ids.push_back(forks[i].token_id);
    AppendToken(next[i]->sampling, forks[i].token_id);
  }
  record.group.seqs = std::move(next);
}

void Engine::FinishBeams(Record& record) {
  const EngineRequest& r = record.request;
  std::vector<BeamHypothesis> results = record.beams->Results();
  const Sequence& root = *record.group.seqs.front();
  for (size_t i = 0; i < results.size(); ++i) {
    const BeamHypothesis& h = results[i];
    EngineOutput out = BaseOutput(record, root);
    out.index = static_cast<int32_t>(i);
    out.token_ids = h.token_ids;
    out.text = tokenizer_->Decode(h.token_ids, r.skip_special_tokens);
    out.score = h.score;
    bool eos = !h.token_ids.empty() &&
               std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(),
                         h.token_ids.back()) != config_.eos_token_ids.end();
    out.finish = eos && !r.params.ignore_eos ? OutputFinish::kStop : OutputFinish::kLength;
    out.num_output_tokens = static_cast<int64_t>(h.token_ids.size());
    r.sink->OnOutput(std::move(out));
  }
  for (auto& seq : record.group.seqs) seq->finished = true;
}

EngineOutput Engine::BaseOutput(const Record& record, const Sequence& seq) const {
  EngineOutput out{.request_id = record.request.request_id, .index = seq.index};
  out.num_prompt_tokens = static_cast<int64_t>(record.request.prompt_ids.size());
  out.num_cached_tokens = seq.num_cached_tokens;
  out.num_output_tokens = seq.sampling.num_output_tokens();
  out.seed = seq.sampling.seed;
  if (record.first_scheduled) out.queue_time = *record.first_scheduled - record.arrival;
  if (record.first_token) out.first_token_time = *record.first_token - record.arrival;
  return out;
}

void Engine::MaybeRetire(Record& record) {
  auto& seqs = record.group.seqs;
  for (auto it = seqs.begin(); it != seqs.end();) {
    if ((*it)->finished) {
      FreeBlocks((*it)->id);  // held (pinned) blocks survive until ReleaseHold
      it = seqs.erase(it);
    } else {
      ++it;
    }
  }
  if (!seqs.empty()) return;
  if (record.phase == Record::Phase::kHeld) scheduler_.Remove(&record.group);
  if (record.phase == Record::Phase::kActive) Retire(record.request.request_id);  // deletes it
}

}  // namespace tandem
