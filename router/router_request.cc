#include "router/router_request.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace tandem::router {

namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

}  // namespace

RouterRequest::RouterRequest(RouterContext* ctx, PreparedRequest request, absl::Time arrival,
                             absl::Time deadline, uint64_t serial, RequestObserver* observer)
    : ctx_(ctx),
      request_(std::move(request)),
      arrival_(arrival),
      deadline_(deadline),
      serial_(serial),
      observer_(observer),
      tracker_(request_.num_outputs()) {
  ctx_->active->AddLive(1);
}

void RouterRequest::Start() {
  ctx_->active->Add(serial_, weak_from_this());
  Scope scope(this);
  std::weak_ptr<RouterRequest> weak = weak_from_this();
  auto start = [weak] {
    if (auto self = weak.lock()) self->OnAdmitted();
  };
  switch (ctx_->admission->Enter(serial_, start)) {
    case Admission::Decision::kRunNow:
      holds_slot_ = true;
      admitted_ = absl::Now();
      phase_ = Phase::kRouting;
      return BeginAttemptLocked();
    case Admission::Decision::kQueued:
      phase_ = Phase::kQueued;
      timer_ = ctx_->timers->Schedule(deadline_, [weak] {
        if (auto self = weak.lock()) self->OnQueueDeadline();
      });
      return;
    case Admission::Decision::kRejected:
      return FinishLocked(grpc::Status(
          grpc::StatusCode::RESOURCE_EXHAUSTED,
          absl::StrCat("router is full: ", ctx_->options->max_inflight, " running and ",
                       ctx_->options->max_queue, " queued requests (--max_inflight, --max_queue)")));
    case Admission::Decision::kClosed:
      return FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "router is draining"));
  }
}

void RouterRequest::OnAdmitted() {
  Scope scope(this);
  if (phase_ != Phase::kQueued) {  // finished while queued: pass the slot on
    effects_.push_back([admission = ctx_->admission] { admission->Release(); });
    return;
  }
  ctx_->timers->Cancel(timer_);
  holds_slot_ = true;
  admitted_ = absl::Now();
  phase_ = Phase::kRouting;
  BeginAttemptLocked();
}

void RouterRequest::OnQueueDeadline() {
  Scope scope(this);
  if (phase_ != Phase::kQueued || !ctx_->admission->Withdraw(serial_)) return;
  FinishLocked(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            "deadline passed while queued for admission"));
}

void RouterRequest::OnBackoffDone() {
  Scope scope(this);
  if (phase_ != Phase::kBackoff) return;
  phase_ = Phase::kRouting;
  BeginAttemptLocked();
}

void RouterRequest::Cancel() {
  Scope scope(this);
  if (phase_ == Phase::kQueued) ctx_->admission->Withdraw(serial_);
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
}

void RouterRequest::OnWorkerLost(const std::string& name) {
  Scope scope(this);
  bool on_decode = attempt_.decode.name == name;
  bool on_prefill = attempt_.prefill && attempt_.prefill->name == name && attempt_.prefill_call;
  if ((phase_ != Phase::kRouting && phase_ != Phase::kRunning) || attempt_.failing) return;
  if (!on_decode && !on_prefill) return;
  AbandonAttemptLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                    absl::StrCat("worker ", name, " restarted")));
}

void RouterRequest::OnDecodeEvent(int32_t number, const internal_v1::DecodeEvent& event) {
  Scope scope(this);
  if (phase_ != Phase::kRunning || number != attempt_.number || attempt_.failing) return;
  if (event.has_delta()) RelayDeltaLocked(event.delta());
  if (event.has_finished()) RelayFinishedLocked(event.finished());
}

void RouterRequest::RelayDeltaLocked(v1::Delta delta) {
  if (!tracker_.Accept(delta)) return;
  if (first_token_ == absl::InfinitePast()) first_token_ = absl::Now();
  failures_ = 0;  // progress: a later failure starts a fresh retry budget
  v1::GenerateStreamResponse out;
  out.set_request_id(request_.request_id);
  *out.mutable_delta() = std::move(delta);
  observer_->OnEvent(std::move(out));
}

void RouterRequest::RelayFinishedLocked(v1::Finished finished) {
  if (!tracker_.AcceptFinished(finished.index())) return;
  FillFinishedLocked(finished);
  v1::GenerateStreamResponse out;
  out.set_request_id(request_.request_id);
  *out.mutable_finished() = std::move(finished);
  observer_->OnEvent(std::move(out));
}

void RouterRequest::FillFinishedLocked(v1::Finished& f) {
  absl::Time now = absl::Now();
  f.set_seed(request_.seed());
  v1::Timings* t = f.mutable_timings();
  t->set_queue_ms(Ms(admitted_ - arrival_));
  t->set_prefill_ms(prefill_ms_);
  t->set_kv_transfer_ms(kv_transfer_ms_);
  t->set_first_token_ms(first_token_ == absl::InfinitePast() ? Ms(now - arrival_)
                                                              : Ms(first_token_ - arrival_));
  t->set_total_ms(Ms(now - arrival_));
  v1::ServedBy* by = f.mutable_served_by();
  by->set_prefill_worker(prefill_worker_);
  by->set_decode_worker(attempt_.decode.name);
  by->set_migrations(migrations_);
  // The decode worker reports the prefill worker's reuse (it rides on KvComplete), so the
  // count does not depend on whether the Prefill response arrived first.
  int32_t cached = std::max(cached_prompt_tokens_, f.usage().cached_prompt_tokens());
  f.clear_usage();
  if (!tracker_.AllFinished()) return;  // usage rides on the request's last Finished
  f.mutable_usage()->set_prompt_tokens(static_cast<int32_t>(request_.prompt_ids.size()));
  f.mutable_usage()->set_completion_tokens(static_cast<int32_t>(tracker_.total_tokens()));
  f.mutable_usage()->set_cached_prompt_tokens(cached);
}

void RouterRequest::OnDecodeDone(int32_t number, grpc::Status status) {
  Scope scope(this);
  if (phase_ != Phase::kRunning || number != attempt_.number) return;
  attempt_.decode_call.reset();
  if (tracker_.AllFinished()) {
    ctx_->registry->RecordSuccess(attempt_.decode.name);
    return FinishLocked(grpc::Status::OK);
  }
  if (attempt_.failing) {
    CountMigrationLocked();
    return RetryLaterLocked(attempt_.fail_status);
  }
  if (status.ok()) {
    status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "decode stream ended before every output finished");
  }
  switch (ClassifyWorkerFailure(status.error_code())) {
    case FailureKind::kDeadline:
      return FinishLocked(status);
    case FailureKind::kFatal:
      return FinishLocked(grpc::Status(ClientCodeFor(status.error_code()),
                                       status.error_message()));
    case FailureKind::kRetry:
    case FailureKind::kNoCapacity:
      break;
  }
  WorkerFailedLocked(attempt_.decode.name, status);
  CountMigrationLocked();
  RetryLaterLocked(status);
}

// The decode worker was lost after the client saw output: the next attempt is a migration.
void RouterRequest::CountMigrationLocked() {
  if (!tracker_.AnyRelayed()) return;
  ++migrations_;
  TANDEM_LOG(INFO) << "event=migrate request_id=" << request_.request_id
                   << " from=" << (attempt_.decode.name.empty() ? last_decode_ : attempt_.decode.name)
                   << " relayed_tokens=" << tracker_.total_tokens();
}

// Cancels the attempt's calls and frees what the workers hold for it. Idempotent.
void RouterRequest::StopAttemptLocked(const std::string& reason) {
  Attempt& a = attempt_;
  WorkerClients* clients = ctx_->clients;
  // An in-flight Reserve is left to finish (it is short): its answer is the only reliable
  // way to learn the reservation id, which OnReserveDone then aborts.
  if (a.decode_call) effects_.push_back([call = a.decode_call] { call->Cancel(); });
  if (a.prefill_call) effects_.push_back([call = a.prefill_call] { call->Cancel(); });
  bool reserved = !a.reservation.reservation_id().empty();
  if (!a.decode.grpc_address.empty() && (reserved || a.decode_call)) {
    effects_.push_back([clients, address = a.decode.grpc_address, id = a.worker_request_id,
                        reservation = a.reservation.reservation_id(), reason] {
      SendDecodeAbort(*clients, address, id, reservation, reason);
    });
  }
  if (a.prefill && a.prefill_call) {
    effects_.push_back([clients, address = a.prefill->grpc_address, id = a.worker_request_id,
                        reason] { SendPrefillAbort(*clients, address, id, reason); });
    ctx_->registry->AddInflight(a.prefill->name, -1);
  }
  if (!a.decode.name.empty()) {
    ctx_->registry->AddInflight(a.decode.name, -1);
    last_decode_ = a.decode.name;
  }
  a.reserve.reset();
  a.decode_call.reset();
  a.prefill_call.reset();
  a.reservation.Clear();
  a.decode = WorkerView{};
  a.prefill.reset();
}

void RouterRequest::FinishLocked(grpc::Status status) {
  if (phase_ == Phase::kDone) return;
  LogDoneLocked(status);
  if (status.ok()) {
    if (attempt_.prefill_call) ctx_->registry->AddInflight(attempt_.prefill->name, -1);
    if (!attempt_.decode.name.empty()) ctx_->registry->AddInflight(attempt_.decode.name, -1);
  } else {
    StopAttemptLocked(status.error_message());
  }
  phase_ = Phase::kDone;
  if (timer_ != 0) ctx_->timers->Cancel(timer_);
  if (holds_slot_) {
    holds_slot_ = false;
    effects_.push_back([admission = ctx_->admission] { admission->Release(); });
  }
  effects_.push_back([active = ctx_->active, serial = serial_] { active->Remove(serial); });
  RequestObserver* observer = observer_;
  observer_ = nullptr;
  observer->OnComplete(status);
}

void RouterRequest::LogDoneLocked(const grpc::Status& status) {
  TANDEM_LOG(INFO) << "event=request_done request_id=" << request_.request_id
                   << " serial=" << serial_ << " code=" << static_cast<int>(status.error_code())
                   << " prompt_tokens=" << request_.prompt_ids.size()
                   << " completion_tokens=" << tracker_.total_tokens()
                   << " attempts=" << num_attempts_ << " migrations=" << migrations_
                   << " decode=" << attempt_.decode.name << " prefill=" << prefill_worker_
                   << " total_ms=" << Ms(absl::Now() - arrival_) << " first_token_ms="
                   << (first_token_ == absl::InfinitePast() ? -1.0 : Ms(first_token_ - arrival_))
                   << " prefill_ms=" << prefill_ms_ << " kv_transfer_ms=" << kv_transfer_ms_
                   << " reserved_ms="
                   << (reserved_at_ == absl::InfinitePast() ? -1.0 : Ms(reserved_at_ - arrival_))
                   << " prefill_answered_ms="
                   << (prefill_done_at_ == absl::InfinitePast() ? -1.0
                                                            : Ms(prefill_done_at_ - arrival_))
                   << (status.ok() ? "" : " error=\"" + status.error_message() + "\"");
}

}  // namespace tandem::router
