// The engine's inbox commands: add, abort, reserve, start decode, release hold.
#include "absl/strings/str_cat.h"
#include "common/engine/engine.h"
#include "common/engine/engine_record.h"
#include "common/logging.h"

namespace tandem {
namespace {

BeamSearchOptions BeamOptions(const EngineRequest& r, const ModelConfig& config,
                              int64_t max_new_tokens) {
  BeamSearchOptions o{.num_beams = r.params.num_beams,
                      .length_penalty = r.params.length_penalty,
                      .early_stopping = r.params.early_stopping,
                      .max_new_tokens = static_cast<int32_t>(max_new_tokens),
                      .eos_token_ids = r.params.stop_token_ids,
                      .num_return_sequences = r.params.num_return_sequences};
  if (!r.params.ignore_eos) {
    o.eos_token_ids.insert(o.eos_token_ids.end(), config.eos_token_ids.begin(),
                           config.eos_token_ids.end());
  }
  return o;
}

void SendError(const EngineRequest& r, absl::Status status) {
  EngineOutput out{.request_id = r.request_id, .finish = OutputFinish::kAbort,
                   .status = std::move(status)};
  r.sink->OnOutput(std::move(out));
}

}  // namespace

Sequence& Engine::NewSequence(Record& record, int32_t index) {
  auto seq = std::make_unique<Sequence>();
  seq->id = next_seq_id_++;
  seq->index = index;
  record.group.seqs.push_back(std::move(seq));
  return *record.group.seqs.back();
}

// The root sequence of a request: prompt + earlier generated tokens, the sampling state
// and stop checker fed with those tokens (already streamed, so their text is dropped).
static void InitRoot(Sequence& seq, const EngineRequest& r, const Tokenizer& tokenizer,
                     const ModelConfig& config) {
  seq.token_ids = r.prompt_ids;
  seq.token_ids.insert(seq.token_ids.end(), r.generated_ids.begin(), r.generated_ids.end());
  seq.num_prompt_tokens = static_cast<int64_t>(r.prompt_ids.size());
  seq.sampling = MakeSequenceState(r.prompt_ids, r.seed);
  if (!r.params.beam_search()) {
    seq.stop = std::make_unique<StopChecker>(tokenizer, r.params, config.eos_token_ids,
                                             r.prompt_ids, r.skip_special_tokens);
  }
  for (int32_t token : r.generated_ids) {
    AppendToken(seq.sampling, token);
    if (seq.stop) seq.stop->Push(seq.sampling, token);
  }
}

void Engine::Handle(AddCommand& c) {
  EngineRequest& r = c.request;
  if (records_.contains(r.request_id)) {
    SendError(r, absl::AlreadyExistsError(absl::StrCat("request_id \"", r.request_id,
                                                       "\" is already running")));
    return;
  }
  auto record = std::make_unique<Record>();
  record->arrival = absl::Now();
  int64_t known = static_cast<int64_t>(r.prompt_ids.size() + r.generated_ids.size());
  record->max_total_tokens = std::min<int64_t>(
      known + r.params.max_tokens - static_cast<int64_t>(r.generated_ids.size()),
      config_.max_position_embeddings);
  Sequence& root = NewSequence(*record, 0);
  InitRoot(root, r, *tokenizer_, config_);
  bool fans_out = r.params.n > 1 || r.params.beam_search();
  if (options_.role == EngineRole::kPrefillOnly && fans_out) {
    root.token_ids.pop_back();  // the decode worker computes the last token and fans out
  }
  if (r.params.beam_search()) {
    record->beams.emplace(BeamOptions(r, config_, record->max_total_tokens - known));
  }
  record->needs_fork = r.params.n > 1 && options_.role != EngineRole::kPrefillOnly;
  record->request = std::move(r);
  Record* raw = record.get();
  records_[raw->request.request_id] = std::move(record);
  scheduler_.AddWaiting(&raw->group);
}

void Engine::Handle(AbortCommand& c) {
  auto it = records_.find(c.request_id);
  if (it == records_.end()) return;  // finished already, or never known: idempotent
  Record& record = *it->second;
  if (record.request.sink) SendError(record.request, c.reason);
  if (!record.held_blocks.empty() && !c.release_hold) {
    // Prefill role after the KV hand-off: the transfer may be reading the pinned blocks.
    // Everything else goes now; the blocks and the record wait for ReleaseHold.
    scheduler_.Remove(&record.group);
    for (auto& seq : record.group.seqs) FreeBlocks(seq->id);
    record.group.seqs.clear();
    record.phase = Record::Phase::kHeld;
    return;
  }
  Retire(c.request_id);
}

void Engine::Handle(ReserveCommand& c) {
  if (records_.contains(c.request_id)) {
    c.done({.status = absl::AlreadyExistsError(
                absl::StrCat("request_id \"", c.request_id, "\" is already reserved"))});
    return;
  }
  auto record = std::make_unique<Record>();
  record->phase = Record::Phase::kReserved;
  record->arrival = absl::Now();
  record->lease_deadline = c.lease;
  record->reserved_tokens = c.num_tokens;
  record->request.request_id = c.request_id;
  Sequence& seq = NewSequence(*record, 0);
  // Placeholder ids: no prefix-cache lookup (a reservation's tokens are not known yet).
  std::vector<int32_t> placeholders(c.num_tokens, -1);
  std::optional<AllocationPlan> plan =
      c.num_tokens > 0 && c.num_tokens < config_.max_position_embeddings
          ? blocks_.PlanAllocate(seq.id, placeholders, c.num_tokens)
          : std::nullopt;
  if (!plan) {
    c.done({.status = absl::ResourceExhaustedError(absl::StrCat(
                "cannot reserve KV for ", c.num_tokens, " tokens: ", blocks_.num_blocks_free(),
                " of ", blocks_.num_blocks_total(), " blocks free"))});
    return;
  }
  blocks_.Commit(*plan);
  std::span<const BlockId> table = blocks_.block_table(seq.id);
  Reservation reservation{.status = absl::OkStatus(),
                          .blocks = std::vector<BlockId>(table.begin(), table.end())};
  records_[c.request_id] = std::move(record);
  c.done(std::move(reservation));
}

void Engine::Handle(StartDecodeCommand& c) {
  EngineRequest& r = c.request;
  auto it = records_.find(r.request_id);
  if (it == records_.end() || it->second->phase != Record::Phase::kReserved) {
    SendError(r, absl::FailedPreconditionError(absl::StrCat(
                     "no KV reservation for request_id \"", r.request_id, "\"")));
    return;
  }
  Record& record = *it->second;
  int64_t known = static_cast<int64_t>(r.prompt_ids.size() + r.generated_ids.size());
  int64_t kv_tokens = c.first_token ? known : known - 1;
  if (kv_tokens != record.reserved_tokens) {
    SendError(r, absl::FailedPreconditionError(absl::StrCat(
                     "reservation holds KV for ", record.reserved_tokens,
                     " tokens but the request has ", kv_tokens)));
    Retire(r.request_id);
    return;
  }
  Sequence& seq = *record.group.seqs.front();
  InitRoot(seq, r, *tokenizer_, config_);
  seq.num_computed_tokens = kv_tokens;
  seq.num_cached_tokens = r.prefill_cached_tokens;
  blocks_.RegisterComputedTokens(seq.id, seq.token_ids, kv_tokens);
  record.max_total_tokens = std::min<int64_t>(
      known + r.params.max_tokens - static_cast<int64_t>(r.generated_ids.size()),
      config_.max_position_embeddings);
  if (r.params.beam_search()) {
    record.beams.emplace(BeamOptions(r, config_, record.max_total_tokens - known));
  }
  record.needs_fork = r.params.n > 1;
  record.request = std::move(r);
  record.phase = Record::Phase::kActive;
  record.first_scheduled = absl::Now();
  scheduler_.AddRunning(&record.group);
  if (c.first_token) AcceptToken(record, seq, *c.first_token, std::move(c.first_logprobs));
  MaybeRetire(record);
}

void Engine::Handle(ReleaseCommand& c) {
  // A hand-off and the end of its step (kHeld) happen in one step, so a release, which
  // comes through the inbox, always finds the record held.
  auto it = records_.find(c.request_id);
  if (it == records_.end() || it->second->phase != Record::Phase::kHeld) return;
  Retire(c.request_id);
}

void Engine::Retire(const std::string& request_id) {
  auto it = records_.find(request_id);
  if (it == records_.end()) return;
  Record& record = *it->second;
  scheduler_.Remove(&record.group);
  for (auto& seq : record.group.seqs) FreeBlocks(seq->id);
  if (!record.held_blocks.empty()) blocks_.Unpin(record.held_blocks);
  records_.erase(it);
}

}  // namespace tandem
