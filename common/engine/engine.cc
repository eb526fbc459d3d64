#include "common/engine/engine.h"

#include "absl/strings/str_cat.h"
#include "common/engine/engine_record.h"
#include "common/logging.h"

namespace tandem {

absl::StatusOr<std::optional<bool>> ParsePipelineSteps(const std::string& value,
                                                       const std::string& flag) {
  if (value == "auto") return std::optional<bool>();
  if (value == "on") return std::optional<bool>(true);
  if (value == "off") return std::optional<bool>(false);
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " must be auto, on or off, got \"", value, "\""));
}

Engine::Engine(const EngineOptions& options, std::unique_ptr<ModelRunner> runner,
               std::shared_ptr<const Tokenizer> tokenizer)
    : options_(options),
      config_(runner->config()),
      kv_layout_(runner->kv_layout()),
      runner_(std::move(runner)),
      tokenizer_(std::move(tokenizer)),
      blocks_({.num_blocks = static_cast<int32_t>(runner_->num_kv_blocks()),
               .block_size_tokens = static_cast<int32_t>(kv_layout_.block_size_tokens)}),
      scheduler_(options.scheduler, blocks_),
      pipeline_(options.role != EngineRole::kPrefillOnly &&
                options.pipeline_steps.value_or(runner_->OverlapsSteps())) {}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  TANDEM_CHECK(!thread_.joinable());
  thread_ = std::thread([this] { Loop(); });
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The engine thread is gone: this thread owns the state now.
  DrainInbox();
  if (pending_) CollectSampled();
  std::vector<std::string> ids;
  for (const auto& [id, record] : records_) ids.push_back(id);
  for (const std::string& id : ids) {
    AbortCommand c{id, absl::CancelledError("engine stopped"), /*release_hold=*/true};
    Handle(c);
  }
  FlushDeferredFrees();
}

void Engine::Push(Command command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox_.push_back(std::move(command));
  }
  wake_.notify_one();
}

void Engine::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!scheduler_.has_work() && !pending_) {
        wake_.wait_for(lock, absl::ToChronoMilliseconds(options_.idle_wait),
                       [this] { return stopping_ || !inbox_.empty(); });
      }
      if (stopping_) return;
    }
    Step();
  }
}

bool Engine::Step() {
  DrainInbox();
  ExpireDeadlines();
  if (pending_) {
    // Pipelined: the next pass goes to the device before this host waits for the tokens.
    Continuation next;
    const bool launched = LaunchContinuation(next);
    CollectSampled();
    if (launched) FinishContinuation(next);
  }
  if (!pending_) {
    SchedulerOutput out = scheduler_.Schedule();
    num_preemptions_ += static_cast<int64_t>(out.preempted.size());
    if (!out.empty()) RunForward(out);
    if (!pipeline_ && pending_) CollectSampled();
  }
  if (!pending_) FlushDeferredFrees();
  ++num_steps_;
  KvCacheStats kv = blocks_.stats();
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_ = {.num_running = scheduler_.num_running(),
            .num_waiting = scheduler_.num_waiting(),
            .num_reserved = 0,
            .num_blocks_free = kv.num_blocks_free,
            .num_blocks_total = kv.num_blocks_total,
            .prefix_cache_query_tokens = kv.prefix_cache_query_tokens,
            .prefix_cache_hit_tokens = kv.prefix_cache_hit_tokens,
            .num_steps = num_steps_,
            .num_preemptions = num_preemptions_,
            .num_computed_tokens = num_computed_tokens_,
            .num_pipelined_steps = num_pipelined_steps_};
  for (const auto& [id, record] : records_) {
    if (record->phase == Record::Phase::kReserved) ++stats_.num_reserved;
  }
  constexpr int64_t kHashRefreshSteps = 16;  // O(num_blocks) walk: not every step
  constexpr size_t kMaxReportedHashes = 4096;
  if (num_steps_ % kHashRefreshSteps == 1) {
    cached_block_hashes_ = blocks_.CachedBlockHashes(kMaxReportedHashes);
  }
  stats_.cached_block_hashes = cached_block_hashes_;
  return scheduler_.has_work() || pending_.has_value();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

void Engine::DrainInbox() {
  std::deque<Command> commands;
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands.swap(inbox_);
  }
  for (Command& command : commands) {
    std::visit([this](auto& c) { Handle(c); }, command);
  }
}

absl::Status Engine::AddRequest(EngineRequest request) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) return s;
  Push(AddCommand{std::move(request)});
  return absl::OkStatus();
}

void Engine::Abort(const std::string& request_id, absl::Status reason) {
  Push(AbortCommand{request_id, std::move(reason)});
}

void Engine::Reserve(const std::string& request_id, int64_t num_tokens,
                     absl::Time lease_deadline, ReserveCallback done) {
  Push(ReserveCommand{request_id, num_tokens, lease_deadline, std::move(done)});
}

absl::Status Engine::StartDecode(EngineRequest request, std::optional<int32_t> first_token,
                                 std::optional<SampledLogprobs> first_logprobs) {
  if (absl::Status s = ValidateRequest(request); !s.ok()) return s;
  if (first_token && (*first_token < 0 || *first_token >= config_.vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat("first_token ", *first_token,
                                                   " outside the vocabulary"));
  }
  Push(StartDecodeCommand{std::move(request), first_token, std::move(first_logprobs)});
  return absl::OkStatus();
}

void Engine::ReleaseHold(const std::string& request_id) { Push(ReleaseCommand{request_id}); }

absl::Status Engine::ValidateRequest(const EngineRequest& r) const {
  if (r.request_id.empty()) return absl::InvalidArgumentError("request_id must not be empty");
  if (!r.sink) return absl::InvalidArgumentError("request has no output sink");
  if (r.prompt_ids.empty()) return absl::InvalidArgumentError("prompt must not be empty");
  for (const auto* ids : {&r.prompt_ids, &r.generated_ids}) {
    for (int32_t id : *ids) {
      if (id < 0 || id >= config_.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "prompt token id ", id, " is outside the vocabulary [0, ", config_.vocab_size, ")"));
      }
    }
  }
  if (absl::Status s = r.params.Validate(config_.vocab_size); !s.ok()) return s;
  int64_t known = static_cast<int64_t>(r.prompt_ids.size() + r.generated_ids.size());
  if (known >= config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt has ", known, " tokens; the model's context is ", config_.max_position_embeddings,
        " and at least one must be left to generate"));
  }
  int64_t block_size = kv_layout_.block_size_tokens;
  int64_t longest = std::min<int64_t>(known + r.params.max_tokens, config_.max_position_embeddings);
  int64_t fan_out = std::max(r.params.n, r.params.num_beams);
  int64_t blocks_needed = fan_out * ((longest + block_size - 1) / block_size);
  if (blocks_needed > blocks_.num_blocks_total()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request needs up to ", blocks_needed, " KV blocks (prompt + max_tokens, times n or ",
        "num_beams); this worker has ", blocks_.num_blocks_total()));
  }
  return absl::OkStatus();
}

void Engine::ExpireDeadlines() {
  absl::Time now = absl::Now();
  constexpr absl::Duration kLeaseGrace = absl::Seconds(5);  // the transport stops first
  std::vector<std::pair<std::string, absl::Status>> expired;
  for (const auto& [id, record] : records_) {
    // A held prefill is done computing; its holder's transfer has its own deadline and
    // releases it (ReleaseHold).
    if (record->phase == Record::Phase::kHeld) continue;
    if (record->phase == Record::Phase::kReserved && now > record->lease_deadline + kLeaseGrace) {
      expired.emplace_back(id, absl::DeadlineExceededError("KV reservation lease expired"));
    } else if (now > record->request.deadline) {
      expired.emplace_back(id, absl::DeadlineExceededError("request deadline exceeded"));
    }
  }
  for (auto& [id, status] : expired) {
    AbortCommand c{id, std::move(status)};
    Handle(c);
  }
}

}  // namespace tandem
