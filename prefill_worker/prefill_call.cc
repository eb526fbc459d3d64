#include "prefill_worker/prefill_call.h"

#include "absl/strings/str_cat.h"
#include "common/api/api_convert.h"
#include "common/logging.h"
#include "common/service/worker/rpc_util.h"

namespace tandem {

PrefillCall::PrefillCall(PrefillContext& ctx, grpc::ServerUnaryReactor* reactor,
                         const internal::v1::PrefillRequest& request,
                         internal::v1::PrefillResponse* response, absl::Time send_deadline)
    : ctx_(ctx),
      reactor_(reactor),
      id_(request.reservation().reservation_id()),
      request_id_(request.request_id()),
      reservation_(request.reservation()),
      response_(response),
      start_(absl::Now()),
      send_deadline_(send_deadline) {}

void PrefillCall::OnOutput(EngineOutput o) {
  std::unique_lock<std::mutex> lock(mu_);
  const bool handoff = !o.kv_blocks.empty();
  switch (phase_) {
    case Phase::kDone:
      lock.unlock();
      if (handoff) ctx_.engine.ReleaseHold(id_);  // a late hand-off nobody will send
      return;
    case Phase::kPrefilling:
      if (handoff) {
        if (cancelled_) {
          return EndUnsent(lock, /*release_hold=*/true,
                           absl::CancelledError("Prefill call cancelled"));
        }
        handoff_ = std::move(o);
        // Overlap: the forward pass that writes the KV starts after this.
        if (ctx_.kv_overlap) StartSendLocked(/*first_token=*/nullptr);
        return;
      }
      if (o.finish == OutputFinish::kAbort) {
        return EndUnsent(lock, /*release_hold=*/!handoff_.kv_blocks.empty(),
                         o.status.ok() ? absl::CancelledError("prefill aborted") : o.status);
      }
      if (handoff_.kv_blocks.empty()) return;  // nothing else precedes a hand-off
      // Without overlap: the first token came; the KV goes now, with it.
      first_token_known_ = true;
      first_token_at_ = absl::Now();
      FillResponseLocked(o);
      if (cancelled_) {
        return EndUnsent(lock, /*release_hold=*/true,
                         absl::CancelledError("Prefill call cancelled"));
      }
      StartSendLocked(&o);
      return;
    case Phase::kSending:
      if (o.finish == OutputFinish::kAbort) {
        // The pass failed or the request was aborted after the hand-off: the transfer ends
        // (CANCELLED) and its end releases the blocks and answers with this status.
        abort_status_ = o.status.ok() ? absl::CancelledError("prefill aborted") : o.status;
        ctx_.sender.Cancel(transfer_id_);
        return;
      }
      if (first_token_known_) return;
      first_token_known_ = true;
      first_token_at_ = absl::Now();
      FillResponseLocked(o);
      ctx_.sender.SetFirstToken(
          transfer_id_,
          {.token_id = o.token_ids.empty() ? -1 : o.token_ids[0],
           .logprob = o.logprobs.empty() ? 0.0f : o.logprobs[0].chosen.logprob,
           .cached_prompt_tokens = static_cast<int32_t>(o.num_cached_tokens)});
      return;
  }
}

void PrefillCall::EndUnsent(std::unique_lock<std::mutex>& lock, bool release_hold,
                            const absl::Status& status) {
  phase_ = Phase::kDone;
  lock.unlock();
  if (release_hold) ctx_.engine.ReleaseHold(id_);
  Finish(status);
}

void PrefillCall::FillResponseLocked(const EngineOutput& o) {
  response_->set_first_token_id(o.token_ids.empty() ? -1 : o.token_ids[0]);
  if (!o.logprobs.empty()) LogprobsToProto(o.logprobs[0], response_->mutable_first_logprob());
  response_->set_cached_prompt_tokens(static_cast<int32_t>(o.num_cached_tokens));
  response_->set_prefill_ms(absl::ToDoubleMilliseconds(absl::Now() - start_));
  *response_->mutable_prefill_worker() = ctx_.identity();
}

void PrefillCall::StartSendLocked(const EngineOutput* first_token) {
  KvSendRequest send{
      .endpoint = reservation_.kv_endpoint(),
      .receiver_incarnation = reservation_.decode_worker().incarnation(),
      .reservation_id = id_,
      .src_blocks = {handoff_.kv_blocks.begin(), handoff_.kv_blocks.end()},
      .num_tokens = static_cast<int32_t>(handoff_.kv_num_tokens),
      .deadline = send_deadline_};
  if (first_token == nullptr) {  // overlap: the pass is about to write the KV
    send.progress = handoff_.kv_progress;
    send.first_token_pending = true;
  } else {
    const EngineOutput& o = *first_token;
    send.first_token_id = o.token_ids.empty() ? -1 : o.token_ids[0];
    send.first_logprob = o.logprobs.empty() ? 0.0f : o.logprobs[0].chosen.logprob;
    send.cached_prompt_tokens = static_cast<int32_t>(o.num_cached_tokens);
  }
  phase_ = Phase::kSending;
  transfer_id_ = ctx_.sender.StartSend(std::move(send));
  ctx_.poller.Watch(transfer_id_, [call = shared_from_this()](absl::Status status) {
    call->OnTransferDone(std::move(status));
  });
}

void PrefillCall::OnTransferDone(absl::Status status) {
  absl::Status aborted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = Phase::kDone;
    aborted = abort_status_;
    // The part of the transfer the forward pass did not hide: first token -> KV arrived.
    if (first_token_known_) {
      response_->set_kv_transfer_ms(absl::ToDoubleMilliseconds(absl::Now() - first_token_at_));
    }
  }
  ctx_.engine.ReleaseHold(id_);  // the sender stopped reading the blocks
  if (!aborted.ok()) {
    Finish(aborted);
    return;
  }
  if (!status.ok()) {
    TANDEM_LOG(WARNING) << "event=kv_send_failed id=" << id_ << " endpoint="
                        << reservation_.kv_endpoint() << " code=" << status.code()
                        << " error=\"" << status.message() << "\"";
    status = absl::Status(status.code(), absl::StrCat("kv transfer to ", reservation_.kv_endpoint(),
                                                      " failed: ", std::string(status.message())));
  }
  Finish(status);
}

void PrefillCall::Cancel(const absl::Status& reason) {
  std::unique_lock<std::mutex> lock(mu_);
  cancelled_ = true;
  switch (phase_) {
    case Phase::kPrefilling:
      lock.unlock();
      ctx_.engine.Abort(id_, reason);  // its abort output (or a late handoff) ends the call
      return;
    case Phase::kSending:
      ctx_.sender.Cancel(transfer_id_);  // the poller reports when it stopped
      return;
    case Phase::kDone:
      return;
  }
}

void PrefillCall::Reject(const absl::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = Phase::kDone;
  }
  Finish(status);
}

void PrefillCall::Finish(const absl::Status& status) {
  reactor_->Finish(ToGrpcStatus(status));  // exactly once: only the move to kDone calls it
}

}  // namespace tandem
