// RouterRequest: one attempt on a (prefill, decode) pair, and what happens when it fails.
#include <random>

#include "absl/strings/str_cat.h"
#include "common/api/api_convert.h"
#include "common/logging.h"
#include "router/router_request.h"

namespace tandem::router {
namespace {

double Uniform01() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

constexpr absl::Duration kMaxReserveWait = absl::Seconds(10);
constexpr absl::Duration kMaxLease = absl::Seconds(30);

}  // namespace

void RouterRequest::BeginAttemptLocked() {
  if (absl::Now() >= deadline_) {
    return FinishLocked(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                     "deadline passed before a worker took the request"));
  }
  if (FinishedByLengthLocked()) return;
  bool all_full = false;
  std::optional<WorkerView> decode = PickDecodeLocked(&all_full);
  if (!decode) {
    if (all_full) return WaitForCapacityLocked();
    return RetryLaterLocked(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "no healthy decode worker"));
  }
  attempt_ = Attempt{};
  attempt_.number = ++num_attempts_;
  attempt_.worker_request_id = absl::StrCat(request_.request_id, "#", serial_, ".",
                                            attempt_.number);
  attempt_.decode = *decode;
  attempt_.prefill = PickPrefillLocked();
  if (Continues()) attempt_.generated = tracker_.tokens(0);
  tracker_.BeginAttempt(/*replay=*/!Continues());
  ctx_->registry->AddInflight(decode->name, 1);
  if (!attempt_.prefill) {
    prefill_worker_ = decode->name;  // colocated: D prefills too
    return OpenDecodeLocked();
  }
  ReserveLocked();
}

// A migrated n == 1 request whose relayed tokens already reach max_tokens or the context:
// it finishes here (the lost worker would have sent exactly this Finished).
bool RouterRequest::FinishedByLengthLocked() {
  if (!Continues() || tracker_.finished(0)) return false;
  int64_t generated = static_cast<int64_t>(tracker_.tokens(0).size());
  int64_t total = static_cast<int64_t>(request_.prompt_ids.size()) + generated;
  if (generated < request_.params.max_tokens && total < ctx_->model->max_context_tokens()) {
    return false;
  }
  phase_ = Phase::kRunning;
  v1::Finished finished;
  finished.set_finish_reason(v1::FINISH_REASON_LENGTH);
  RelayFinishedLocked(std::move(finished));
  FinishLocked(grpc::Status::OK);
  return true;
}

RoutingRequest RouterRequest::RoutingRequestLocked() const {
  std::vector<int32_t> tokens = request_.prompt_ids;
  if (Continues()) tokens.insert(tokens.end(), tracker_.tokens(0).begin(), tracker_.tokens(0).end());
  RoutingRequest r;
  r.num_prompt_tokens = static_cast<int32_t>(tokens.size());
  r.prompt_block_hashes = FullBlockHashes(tokens, ctx_->model->kv_block_size_tokens);
  return r;
}

// Healthy decode-capable workers, minus those without KV room this round; workers that
// failed this request are used only when nothing else is left.
std::optional<WorkerView> RouterRequest::PickDecodeLocked(bool* all_full) {
  std::vector<WorkerView> healthy = ctx_->registry->Candidates(WorkerRole::kDecode, absl::Now());
  std::vector<WorkerView> preferred, fallback;
  for (WorkerView& w : healthy) {
    if (full_.contains(w.name)) continue;
    (avoid_.contains(w.name) ? fallback : preferred).push_back(std::move(w));
  }
  *all_full = !healthy.empty() && preferred.empty() && fallback.empty();
  std::vector<WorkerView>& pool = preferred.empty() ? fallback : preferred;
  std::optional<size_t> pick = ctx_->decode_policy->Pick(pool, RoutingRequestLocked());
  if (!pick) return std::nullopt;
  return pool[*pick];
}

std::optional<WorkerView> RouterRequest::PickPrefillLocked() {
  if (attempt_.decode.role == WorkerRole::kColocated) return std::nullopt;
  std::vector<WorkerView> preferred, fallback;
  for (WorkerView& w : ctx_->registry->Candidates(WorkerRole::kPrefill, absl::Now())) {
    if (w.role != WorkerRole::kPrefill) continue;  // colocated workers serve DecodeWorker only
    (avoid_.contains(w.name) ? fallback : preferred).push_back(std::move(w));
  }
  std::vector<WorkerView>& pool = preferred.empty() ? fallback : preferred;
  std::optional<size_t> pick = ctx_->prefill_policy->Pick(pool, RoutingRequestLocked());
  if (!pick) return std::nullopt;
  return pool[*pick];
}

void RouterRequest::ReserveLocked() {
  auto call = std::make_shared<Attempt::ReserveCall>();
  int32_t generated = static_cast<int32_t>(attempt_.generated.size());
  int32_t forks = request_.params.n > 1 || request_.params.beam_search() ? 1 : 0;
  call->request.set_request_id(attempt_.worker_request_id);
  call->request.set_num_prompt_tokens(static_cast<int32_t>(request_.prompt_ids.size()) +
                                      generated - forks);
  call->request.set_max_tokens(std::max(1, request_.params.max_tokens - generated));
  absl::Duration lease = std::clamp(deadline_ - absl::Now(), absl::Seconds(1), kMaxLease);
  call->request.set_lease_ms(static_cast<int32_t>(absl::ToInt64Milliseconds(lease)));
  call->context.set_deadline(absl::ToChronoTime(std::min(deadline_, absl::Now() + kMaxReserveWait)));
  attempt_.reserve = call;
  auto* stub = ctx_->clients->Get(attempt_.decode.grpc_address).decode.get();
  effects_.push_back([self = shared_from_this(), stub, call, number = attempt_.number,
                      address = attempt_.decode.grpc_address] {
    stub->async()->Reserve(&call->context, &call->request, &call->response,
                           [self, call, number, address](grpc::Status status) {
                             self->OnReserveDone(number, address, call->request.request_id(),
                                                 std::move(status), call->response);
                           });
  });
}

void RouterRequest::OnReserveDone(int32_t number, const std::string& address,
                                  const std::string& request_id, grpc::Status status,
                                  const internal_v1::ReserveResponse& response) {
  Scope scope(this);
  bool current = phase_ == Phase::kRouting && number == attempt_.number && !attempt_.failing;
  if (!current) {
    if (status.ok()) {  // nobody will use it: give it back now, not at lease expiry
      effects_.push_back([clients = ctx_->clients, address, id = request_id,
                          reservation = response.reservation().reservation_id()] {
        SendDecodeAbort(*clients, address, id, reservation, "attempt abandoned");
      });
    }
    return;
  }
  attempt_.reserve.reset();
  if (status.ok()) {
    ctx_->registry->RecordSuccess(attempt_.decode.name);
    attempt_.reservation = response.reservation();
    reserved_at_ = absl::Now();
    OpenDecodeLocked();
    return StartPrefillLocked();
  }
  switch (ClassifyWorkerFailure(status.error_code())) {
    case FailureKind::kNoCapacity:
      full_.insert(attempt_.decode.name);
      StopAttemptLocked("no KV room");
      return BeginAttemptLocked();
    case FailureKind::kDeadline:
      return FinishLocked(status);
    case FailureKind::kFatal:
      return FinishLocked(grpc::Status(ClientCodeFor(status.error_code()),
                                       absl::StrCat("decode worker ", attempt_.decode.name,
                                                    ": ", status.error_message())));
    case FailureKind::kRetry:
      break;
  }
  WorkerFailedLocked(attempt_.decode.name, status);
  StopAttemptLocked("reserve failed");
  RetryLaterLocked(status);
}

void RouterRequest::OpenDecodeLocked() {
  internal_v1::DecodeRequest r;
  r.set_reservation_id(attempt_.reservation.reservation_id());
  r.set_request_id(attempt_.worker_request_id);
  r.mutable_prompt_token_ids()->Add(request_.prompt_ids.begin(), request_.prompt_ids.end());
  r.mutable_generated_token_ids()->Add(attempt_.generated.begin(), attempt_.generated.end());
  SamplingParamsToProto(request_.params, r.mutable_sampling());
  r.set_seed(request_.seed());
  r.set_skip_special_tokens(request_.skip_special_tokens);
  std::weak_ptr<RouterRequest> weak = weak_from_this();
  int32_t number = attempt_.number;
  attempt_.decode_call = DecodeCall::Create(
      std::move(r), deadline_,
      [weak, number](const internal_v1::DecodeEvent& event) {
        if (auto self = weak.lock()) self->OnDecodeEvent(number, event);
      },
      [self = shared_from_this(), number](const grpc::Status& status) {
        self->OnDecodeDone(number, status);
      });
  phase_ = Phase::kRunning;
  auto* stub = ctx_->clients->Get(attempt_.decode.grpc_address).decode.get();
  effects_.push_back([call = attempt_.decode_call, stub] { call->Start(stub); });
}

void RouterRequest::StartPrefillLocked() {
  auto call = std::make_shared<Attempt::PrefillCall>();
  internal_v1::PrefillRequest& r = call->request;
  r.set_request_id(attempt_.worker_request_id);
  r.mutable_token_ids()->Add(request_.prompt_ids.begin(), request_.prompt_ids.end());
  r.mutable_token_ids()->Add(attempt_.generated.begin(), attempt_.generated.end());
  r.set_num_generated(static_cast<int32_t>(attempt_.generated.size()));
  SamplingParamsToProto(request_.params, r.mutable_sampling());
  r.set_seed(request_.seed());
  *r.mutable_reservation() = attempt_.reservation;
  call->context.set_deadline(absl::ToChronoTime(deadline_));
  attempt_.prefill_call = call;
  // Named now: D may finish a short request before P's response reaches the router.
  prefill_worker_ = attempt_.prefill->name;
  ctx_->registry->AddInflight(attempt_.prefill->name, 1);
  auto* stub = ctx_->clients->Get(attempt_.prefill->grpc_address).prefill.get();
  effects_.push_back([self = shared_from_this(), stub, call, number = attempt_.number] {
    stub->async()->Prefill(&call->context, &call->request, &call->response,
                           [self, call, number](grpc::Status status) {
                             self->OnPrefillDone(number, std::move(status), call->response);
                           });
  });
}

void RouterRequest::OnPrefillDone(int32_t number, grpc::Status status,
                                  const internal_v1::PrefillResponse& response) {
  Scope scope(this);
  if (phase_ != Phase::kRunning || number != attempt_.number || !attempt_.prefill_call) return;
  attempt_.prefill_call.reset();
  ctx_->registry->AddInflight(attempt_.prefill->name, -1);
  if (attempt_.failing) return;
  if (status.ok()) {
    ctx_->registry->RecordSuccess(attempt_.prefill->name);
    prefill_ms_ = response.prefill_ms();
    prefill_done_at_ = absl::Now();
    kv_transfer_ms_ = response.kv_transfer_ms();
    cached_prompt_tokens_ = response.cached_prompt_tokens();
    prefill_worker_ = response.prefill_worker().name().empty() ? attempt_.prefill->name
                                                                : response.prefill_worker().name();
    return;
  }
  switch (ClassifyWorkerFailure(status.error_code())) {
    case FailureKind::kDeadline:
      return FinishLocked(status);
    case FailureKind::kFatal:
      return FinishLocked(grpc::Status(ClientCodeFor(status.error_code()),
                                       absl::StrCat("prefill worker ", attempt_.prefill->name,
                                                    ": ", status.error_message())));
    case FailureKind::kRetry:
    case FailureKind::kNoCapacity:
      break;
  }
  WorkerFailedLocked(attempt_.prefill->name, status);
  AbandonAttemptLocked(status);
}

// The attempt cannot finish: cancel it, and retry once its Decode stream has closed (so no
// event of the old attempt can interleave with the new one's).
void RouterRequest::AbandonAttemptLocked(grpc::Status status) {
  attempt_.failing = true;
  attempt_.fail_status = status;
  bool stream_open = attempt_.decode_call != nullptr;
  std::shared_ptr<DecodeCall> keep = attempt_.decode_call;
  StopAttemptLocked(status.error_message());
  if (!stream_open) return RetryLaterLocked(status);
  attempt_.decode_call = keep;  // OnDecodeDone of this attempt triggers the retry
}

void RouterRequest::WorkerFailedLocked(const std::string& name, grpc::Status status) {
  ctx_->registry->RecordFailure(name, absl::Now());
  avoid_.insert(name);
  TANDEM_LOG(WARNING) << "event=worker_failed request_id=" << request_.request_id
                      << " worker=" << name << " code=" << static_cast<int>(status.error_code())
                      << " error=\"" << status.error_message() << "\"";
}

void RouterRequest::RetryLaterLocked(grpc::Status status) {
  StopAttemptLocked(status.error_message());
  if (++failures_ >= ctx_->options->retry.max_attempts) {
    return FinishLocked(grpc::Status(
        ClientCodeFor(status.error_code()),
        absl::StrCat("request failed after ", failures_, " attempts: ", status.error_message())));
  }
  ScheduleAttemptLocked(BackoffDelay(ctx_->options->retry, failures_, Uniform01()));
}

void RouterRequest::WaitForCapacityLocked() {
  full_.clear();
  capacity_waits_ = std::min(capacity_waits_ + 1, 8);
  ScheduleAttemptLocked(BackoffDelay(ctx_->options->retry, capacity_waits_, Uniform01()));
}

void RouterRequest::ScheduleAttemptLocked(absl::Duration delay) {
  absl::Time when = absl::Now() + delay;
  if (when >= deadline_) {
    return FinishLocked(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                     "deadline passed while waiting to retry"));
  }
  phase_ = Phase::kBackoff;
  std::weak_ptr<RouterRequest> weak = weak_from_this();
  timer_ = ctx_->timers->Schedule(when, [weak] {
    if (auto self = weak.lock()) self->OnBackoffDone();
  });
}

}  // namespace tandem::router
