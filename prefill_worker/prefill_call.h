// One Prefill call, from the engine to the KV push to the answer (docs/protocol.md steps
// 5-8). Phases: prefilling (in the engine) -> sending (from the KV hand-off, just before
// the forward pass of the prompt's last chunk: the engine holds the blocks pinned, the
// sender streams them as the pass writes them, and gets the first token when it is
// sampled) -> done. Whoever moves it to done releases what it holds: the engine request
// (Abort) while prefilling, the pinned blocks (ReleaseHold) once the transfer stopped,
// never earlier. An abort after the hand-off cancels the transfer and answers once it
// stopped. With kv_overlap off the send starts only once the first token is known.
//
// Threads: OnOutput on the engine thread, OnTransferDone on the poller thread, Cancel on
// gRPC's (OnCancel) or the Abort RPC's. The call outlives its reactor: it touches the
// reactor only to Finish it, once.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/time/time.h"
#include "common/engine/engine_types.h"
#include "grpcpp/grpcpp.h"
#include "prefill_worker/prefill_context.h"
#include "tandem/internal/v1/worker.pb.h"

namespace tandem {

class PrefillCall final : public OutputSink, public std::enable_shared_from_this<PrefillCall> {
 public:
  // `response` is gRPC's, valid until the reactor finished.
  PrefillCall(PrefillContext& ctx, grpc::ServerUnaryReactor* reactor,
              const internal::v1::PrefillRequest& request,
              internal::v1::PrefillResponse* response, absl::Time send_deadline);

  const std::string& id() const { return id_; }
  const std::string& request_id() const { return request_id_; }

  void OnOutput(EngineOutput output) override;
  void Cancel(const absl::Status& reason);
  // Ends the call before it reached the engine.
  void Reject(const absl::Status& status);

 private:
  enum class Phase { kPrefilling, kSending, kDone };

  // Requires mu_. `first_token` null: overlapped (the token follows via SetFirstToken).
  void StartSendLocked(const EngineOutput* first_token);
  void OnTransferDone(absl::Status status);
  // Ends the call before any transfer started: done, the hold released if there is one,
  // answered with `status`. Takes the locked `lock` and unlocks it.
  void EndUnsent(std::unique_lock<std::mutex>& lock, bool release_hold,
                 const absl::Status& status);
  void FillResponseLocked(const EngineOutput& output);  // requires mu_
  void Finish(const absl::Status& status);

  PrefillContext& ctx_;
  grpc::ServerUnaryReactor* const reactor_;
  const std::string id_;          // engine request id: the reservation id
  const std::string request_id_;
  const internal::v1::Reservation reservation_;
  internal::v1::PrefillResponse* const response_;
  const absl::Time start_;
  const absl::Time send_deadline_;
  std::mutex mu_;
  Phase phase_ = Phase::kPrefilling;  // guarded by mu_
  bool cancelled_ = false;            // guarded by mu_
  uint64_t transfer_id_ = 0;          // guarded by mu_
  EngineOutput handoff_;              // guarded by mu_: the KV hand-off (blocks, progress)
  bool first_token_known_ = false;    // guarded by mu_
  absl::Time first_token_at_;         // guarded by mu_
  absl::Status abort_status_;         // guarded by mu_: aborted after the hand-off
};

}  // namespace tandem
