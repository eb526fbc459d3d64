// One client request's life in the router (docs/router.md has the state diagram):
//
//   kQueued -> kRouting -> kRunning -> kDone
//                 ^  |        |
//                 |  v        v
//               kBackoff <----+   (worker failed: retry or migrate after a jittered wait)
//
// kRouting picks a decode worker D (decode policy) and a prefill worker P (prefill policy)
// and reserves KV on D (RESOURCE_EXHAUSTED: the next D, then wait); kRunning has the Decode
// stream open on D and the Prefill call on P in flight (or D alone: colocated). Events from
// D are relayed through the OutputTracker, so a re-issued request (migration) shows the
// client no duplicate and no missing token.
//
// Threading: every entry point (gRPC callbacks, timers, the client's cancel, the poller's
// restart notice) takes `mu_`, updates state, and queues its gRPC side effects, which run
// after the lock is released (gRPC may run callbacks inline). Observer calls happen under
// the lock, so events reach the client in order.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/time/time.h"
#include "router/output_tracker.h"
#include "router/request_observer.h"
#include "router/request_validation.h"
#include "router/router_context.h"
#include "router/worker_calls.h"

namespace tandem::router {

class RouterRequest : public std::enable_shared_from_this<RouterRequest> {
 public:
  // `observer` must outlive the request's OnComplete call.
  RouterRequest(RouterContext* ctx, PreparedRequest request, absl::Time arrival,
                absl::Time deadline, uint64_t serial, RequestObserver* observer);
  ~RouterRequest() { ctx_->active->AddLive(-1); }

  // Admission, then routing. Registers with ctx->active.
  void Start();
  // The client went away: cancel every call, abort on the workers, complete CANCELLED.
  void Cancel();
  // The worker named `name` restarted (new incarnation): move off it.
  void OnWorkerLost(const std::string& name);

  uint64_t serial() const { return serial_; }

 private:
  enum class Phase { kNew, kQueued, kRouting, kBackoff, kRunning, kDone };
  struct Attempt {
    int32_t number = 0;
    std::string worker_request_id;  // request_id#serial.attempt
    WorkerView decode;
    std::optional<WorkerView> prefill;  // nullopt: colocated on `decode`
    internal_v1::Reservation reservation;
    std::vector<int32_t> generated;  // continue mode: tokens the new pair starts after
    using ReserveCall = UnaryCall<internal_v1::ReserveRequest, internal_v1::ReserveResponse>;
    using PrefillCall = UnaryCall<internal_v1::PrefillRequest, internal_v1::PrefillResponse>;
    std::shared_ptr<ReserveCall> reserve;
    std::shared_ptr<PrefillCall> prefill_call;
    std::shared_ptr<DecodeCall> decode_call;
    bool failing = false;  // abandoned: retry once the Decode stream closed
    grpc::Status fail_status;
  };
  using Effects = std::vector<std::function<void()>>;
  class Scope;  // holds mu_, runs the queued effects after unlocking

  // router_request.cc: lifecycle and relaying.
  void OnAdmitted();
  void OnQueueDeadline();
  void OnBackoffDone();
  void OnDecodeEvent(int32_t number, const internal_v1::DecodeEvent& event);
  void OnDecodeDone(int32_t number, grpc::Status status);
  void CountMigrationLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RelayDeltaLocked(v1::Delta delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RelayFinishedLocked(v1::Finished finished) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FillFinishedLocked(v1::Finished& finished) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StopAttemptLocked(const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LogDoneLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // request_attempt.cc: routing, reserve, prefill, decode, retries.
  void BeginAttemptLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool FinishedByLengthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<WorkerView> PickDecodeLocked(bool* all_full) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<WorkerView> PickPrefillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  RoutingRequest RoutingRequestLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReserveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnReserveDone(int32_t number, const std::string& address, const std::string& request_id,
                     grpc::Status status,
                     const internal_v1::ReserveResponse& response);
  void OpenDecodeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartPrefillLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnPrefillDone(int32_t number, grpc::Status status,
                     const internal_v1::PrefillResponse& response);
  void AbandonAttemptLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WorkerFailedLocked(const std::string& name, grpc::Status status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RetryLaterLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WaitForCapacityLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleAttemptLocked(absl::Duration delay) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Continues() const { return request_.params.n == 1 && !request_.params.beam_search(); }

  RouterContext* const ctx_;
  const PreparedRequest request_;
  const absl::Time arrival_;
  const absl::Time deadline_;
  const uint64_t serial_;

  std::mutex mu_;
  Effects effects_ ABSL_GUARDED_BY(mu_);
  RequestObserver* observer_ ABSL_GUARDED_BY(mu_);
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kNew;
  bool holds_slot_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t timer_ ABSL_GUARDED_BY(mu_) = 0;  // queue deadline or backoff
  OutputTracker tracker_ ABSL_GUARDED_BY(mu_);
  Attempt attempt_ ABSL_GUARDED_BY(mu_);
  int32_t num_attempts_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t failures_ ABSL_GUARDED_BY(mu_) = 0;  // failed attempts since the last progress
  int32_t capacity_waits_ ABSL_GUARDED_BY(mu_) = 0;
  int32_t migrations_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_set<std::string> avoid_ ABSL_GUARDED_BY(mu_);  // failed this request
  absl::flat_hash_set<std::string> full_ ABSL_GUARDED_BY(mu_);   // no KV room this round
  // Timings and who served it.
  absl::Time admitted_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time first_token_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  double prefill_ms_ ABSL_GUARDED_BY(mu_) = 0;
  double kv_transfer_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // When the last attempt's reservation and Prefill answer came (request_done log).
  absl::Time reserved_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time prefill_done_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int32_t cached_prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  std::string prefill_worker_ ABSL_GUARDED_BY(mu_);
  std::string last_decode_ ABSL_GUARDED_BY(mu_);  // decode worker of the last stopped attempt
};

// Holds mu_ for one entry point; on exit unlocks, then runs the queued gRPC side effects.
// Keeps the request alive meanwhile (an observer's completion may drop the last owner).
class RouterRequest::Scope {
 public:
  explicit Scope(RouterRequest* r) : r_(r), keep_(r->shared_from_this()), lock_(r->mu_) {}
  ~Scope() {
    Effects effects = std::move(r_->effects_);
    r_->effects_.clear();
    lock_.unlock();
    for (auto& effect : effects) effect();
  }

 private:
  RouterRequest* r_;
  std::shared_ptr<RouterRequest> keep_;
  std::unique_lock<std::mutex> lock_;
};

}  // namespace tandem::router
