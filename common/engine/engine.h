// The engine: one thread that owns the scheduler, block manager, model runner and sampler,
// and runs step after step (DESIGN.md §3). Other threads talk to it only through the inbox
// (the only mutex) and receive outputs through each request's OutputSink.
//
// A step: drain the inbox -> expire deadlines and leases -> schedule -> copy-on-write block
// copies -> one forward pass over every scheduled chunk -> sample rows that got logits
// (n > 1 forks, beam forks) -> stop checks -> outputs -> free finished sequences.
// Pipelined (EngineOptions::pipeline_steps), the sampling's tokens are collected at the start
// of the next step, after that step's pass was launched when every running sequence only
// decodes (engine_pipeline.cc).
//
// Roles (EngineRole): colocated serves whole requests. Prefill-only finishes a request
// after its first token: an output just before the forward pass of its last prompt chunk
// hands off its KV blocks (pinned until ReleaseHold) with that pass's KvLayerProgress, so
// the caller can stream the KV while the pass writes it; the first token follows.
// Decode-only: Reserve allocates blocks for KV computed elsewhere; StartDecode attaches the
// request once its KV arrived and decodes it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "common/backend/model_runner.h"
#include "common/engine/engine_types.h"
#include "common/engine/scheduler.h"
#include "common/kv_cache/block_manager.h"
#include "common/sampling/beam_search.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem {

struct EngineOptions {
  EngineRole role = EngineRole::kColocated;
  SchedulerOptions scheduler;
  absl::Duration idle_wait = absl::Milliseconds(50);  // longest sleep with nothing to do
  // Pipelined decode steps (docs/engine.md): launch step N + 1's pass, its tokens fed from
  // step N's sampler, before step N's tokens reach the host. Unset: when the runner overlaps
  // steps (ModelRunner::OverlapsSteps; the CUDA runner). Never in the prefill role.
  std::optional<bool> pipeline_steps;
};

// "auto" (unset: the runner decides), "on" or "off", for EngineOptions::pipeline_steps;
// INVALID_ARGUMENT names `flag`.
absl::StatusOr<std::optional<bool>> ParsePipelineSteps(const std::string& value,
                                                       const std::string& flag);

class Engine {
 public:
  Engine(const EngineOptions& options, std::unique_ptr<ModelRunner> runner,
         std::shared_ptr<const Tokenizer> tokenizer);
  ~Engine();  // Stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs steps on an engine thread until Stop. Without Start, tests call Step themselves.
  void Start();
  // Aborts every request (CANCELLED) and joins the engine thread.
  void Stop();

  // Validates (INVALID_ARGUMENT naming the field) and queues a request. Any thread.
  absl::Status AddRequest(EngineRequest request);
  // Frees everything the request holds; its sink gets a final kAbort output with `reason`.
  // Unknown or finished ids are fine. Any thread.
  void Abort(const std::string& request_id, absl::Status reason = absl::CancelledError());

  // Decode role. Reserves blocks for `num_tokens` tokens of KV until `lease_deadline`;
  // `done` runs on the engine thread.
  void Reserve(const std::string& request_id, int64_t num_tokens, absl::Time lease_deadline,
               ReserveCallback done);
  // The KV of the reservation's tokens arrived. `first_token` is what the prefill worker
  // sampled after them; without one the reservation holds all but the last token's KV
  // and the engine computes the last token itself (n > 1 and beams).
  absl::Status StartDecode(EngineRequest request, std::optional<int32_t> first_token,
                           std::optional<SampledLogprobs> first_logprobs);
  // Prefill role: the caller is done with the blocks of a finished prefill.
  void ReleaseHold(const std::string& request_id);

  // One step on the caller's thread; returns whether runnable work remains (running or
  // waiting sequences; held and reserved requests wait on other parties).
  bool Step();
  EngineStats stats() const;
  const ModelConfig& config() const { return config_; }
  const KvLayout& kv_layout() const { return kv_layout_; }

 private:
  struct Record;
  struct AddCommand { EngineRequest request; };
  // A prefill-role request whose KV was handed off keeps its pinned blocks after an abort
  // (the transfer may still read them) until ReleaseHold, unless `release_hold` (Stop).
  struct AbortCommand { std::string request_id; absl::Status reason; bool release_hold = false; };
  struct ReserveCommand { std::string request_id; int64_t num_tokens; absl::Time lease; ReserveCallback done; };
  struct StartDecodeCommand { EngineRequest request; std::optional<int32_t> first_token; std::optional<SampledLogprobs> first_logprobs; };
  struct ReleaseCommand { std::string request_id; };
  using Command = std::variant<AddCommand, AbortCommand, ReserveCommand, StartDecodeCommand,
                               ReleaseCommand>;

  void Push(Command command);
  void Loop();
  void DrainInbox();
  void Handle(AddCommand& c);
  void Handle(AbortCommand& c);
  void Handle(ReserveCommand& c);
  void Handle(StartDecodeCommand& c);
  void Handle(ReleaseCommand& c);
  void ExpireDeadlines();
  absl::Status ValidateRequest(const EngineRequest& request) const;

  // engine_step.cc
  void RunForward(const SchedulerOutput& out);
  void ProcessLogits(const SchedulerOutput& out, const LogitsView& logits,
                     const absl::flat_hash_map<const Sequence*, Record*>& owner);
  // Rows sampled together this step, through ModelRunner::SampleLogits: each names the
  // logits row it reads (the n samples of a fan-out share their root's row).
  struct SampleBatchRows {
    std::vector<int32_t> logits_rows;  // [num_rows] indices into the step's logits rows
    std::vector<SamplingRow> sampling;
    std::vector<Record*> records;
    std::vector<Sequence*> seqs;
    void Add(Record& record, Sequence& seq, int32_t logits_row);
  };
  // Beam rows come to the host (ModelRunner::CopyLogitsRows) for BeamSearch.
  void StepBeams(Record& record, const LogitsView& logits, std::span<const int32_t> rows);
  // Aborts the requests of `records` (duplicates fine) after a failed sampling call.
  void FailRequests(std::span<Record* const> records, const absl::Status& status);
  void AcceptToken(Record& record, Sequence& seq, int32_t token,
                   std::optional<SampledLogprobs> logprobs);
  void ForkSamples(Record& record);
  // Prefill role, before the forward pass: pins and hands off the KV of every request whose
  // last prompt chunk is in `out`.
  void HandOffKv(const SchedulerOutput& out, const std::shared_ptr<KvLayerProgress>& progress,
                 const absl::flat_hash_map<const Sequence*, Record*>& owner);
  void FinishPrefill(Record& record, Sequence& seq, int32_t token,
                     std::optional<SampledLogprobs> logprobs);
  void FinishBeams(Record& record);
  void MaybeRetire(Record& record);
  void Retire(const std::string& request_id);
  EngineOutput BaseOutput(const Record& record, const Sequence& seq) const;
  Sequence& NewSequence(Record& record, int32_t index);

  // engine_pipeline.cc. A started sampling whose tokens are not collected yet; rows by id,
  // since a request may be aborted meanwhile.
  struct PendingRow {
    std::string request_id;
    SeqId seq_id = 0;
  };
  // A pass launched before the pending sampling's tokens were collected: one decode token
  // per sequence, fed from that sampling (FedTokenId).
  struct Continuation {
    std::vector<PendingRow> chunks;  // logits row i is chunk i
    std::vector<int64_t> positions;  // each chunk's token position
    absl::StatusOr<LogitsView> logits = absl::UnknownError("not launched");
  };
  // Launches the continuation of the pending sampling's rows when every running sequence
  // is among them and nothing else waits; false when the step must be scheduled instead.
  bool LaunchContinuation(Continuation& next);
  // After the pending tokens were collected: the continuation's KV counts as computed for
  // the sequences still alive, and their rows' sampling starts.
  void FinishContinuation(Continuation& next);
  // Starts sampling `rows` of `logits`; they become the pending sampling (or fail).
  void StartSampling(const LogitsView& logits, const SampleBatchRows& rows);
  // Waits for the pending sampling and hands its tokens to their sequences (those still
  // alive), then retires what finished.
  void CollectSampled();
  // Frees a sequence's blocks, or, while a launched pass may still write them, once it is
  // known to be done (a freed block could be reused by a KV transfer on another stream).
  void FreeBlocks(SeqId seq_id);
  void ReleaseDeferredFrees(int64_t done_generation);
  // With no sampling pending: waits for any pass that may still run (an empty sampling),
  // then frees every deferred sequence.
  void FlushDeferredFrees();
  Record* FindRecord(const std::string& request_id);
  static Sequence* FindSequence(Record& record, SeqId seq_id);

  const EngineOptions options_;
  const ModelConfig config_;
  const KvLayout kv_layout_;
  std::unique_ptr<ModelRunner> runner_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  BlockManager blocks_;
  Scheduler scheduler_;
  absl::flat_hash_map<std::string, std::unique_ptr<Record>> records_;
  SeqId next_seq_id_ = 1;
  const bool pipeline_;
  std::optional<std::vector<PendingRow>> pending_;  // rows of the started sampling
  int64_t num_forwards_ = 0;        // passes launched
  int64_t pending_generation_ = 0;  // num_forwards_ when the pending sampling started
  // A pass was handed to the runner and no sampling started after it yet (it may still run).
  bool pass_in_flight_ = false;
  std::vector<std::pair<int64_t, SeqId>> deferred_frees_;  // (num_forwards_ then, sequence)
  int64_t num_pipelined_steps_ = 0;
  int64_t num_steps_ = 0;
  int64_t num_preemptions_ = 0;
  int64_t num_computed_tokens_ = 0;
  std::vector<uint64_t> cached_block_hashes_;

  std::mutex mu_;  // the inbox
  std::condition_variable wake_;
  std::deque<Command> inbox_;  // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  std::thread thread_;
  mutable std::mutex stats_mu_;
  EngineStats stats_;          // guarded by stats_mu_, refreshed every step
};

}  // namespace tandem
