#include "prefill_worker/prefill_service.h"

#include "absl/strings/str_cat.h"
#include "common/api/api_convert.h"
#include "common/logging.h"
#include "common/status.h"
#include "common/service/worker/rpc_util.h"
#include "prefill_worker/prefill_call.h"

namespace tandem {
namespace {

// Without a deadline from the caller or the lease, a transfer still ends.
constexpr absl::Duration kMaxSendTime = absl::Seconds(60);
// The engine's own deadline trails the call's: at the call's deadline gRPC cancels it and
// the call stops the transfer before the engine would unpin anything.
constexpr absl::Duration kEngineDeadlineGrace = absl::Seconds(2);

class PrefillReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit PrefillReactor(PrefillContext& ctx) : ctx_(ctx) {}
  void Bind(std::shared_ptr<PrefillCall> call) { call_ = std::move(call); }
  void MarkRegistered() { registered_ = true; }

  // Both run only after the handler returned, so call_ and registered_ are settled.
  void OnCancel() override { call_->Cancel(absl::CancelledError("Prefill call cancelled")); }
  void OnDone() override {
    if (registered_) ctx_.RemoveCall(call_->id());
    delete this;
  }

 private:
  PrefillContext& ctx_;
  std::shared_ptr<PrefillCall> call_;
  bool registered_ = false;
};

absl::Time SendDeadline(absl::Time call_deadline, const internal::v1::Reservation& r) {
  absl::Time deadline = std::min(call_deadline, absl::Now() + kMaxSendTime);
  if (r.lease_deadline_unix_ms() > 0) {
    deadline = std::min(deadline, absl::FromUnixMillis(r.lease_deadline_unix_ms()));
  }
  return deadline;
}

}  // namespace

PrefillService::PrefillService(PrefillContext& ctx)
    : ctx_(ctx),
      vocab_size_(ctx.engine.config().vocab_size),
      block_size_tokens_(ctx.engine.kv_layout().block_size_tokens) {}

absl::Status PrefillService::Validate(const internal::v1::PrefillRequest& r,
                                      bool fans_out) const {
  if (r.request_id().empty()) return absl::InvalidArgumentError("request_id must not be empty");
  TANDEM_RETURN_IF_ERROR(ValidateTokenIds(r.token_ids(), vocab_size_, "token_ids", false));
  if (r.num_generated() < 0 || r.num_generated() >= r.token_ids_size()) {
    return absl::InvalidArgumentError(absl::StrCat("num_generated must be in [0, ",
                                                   r.token_ids_size() - 1, "], got ",
                                                   r.num_generated()));
  }
  const internal::v1::Reservation& res = r.reservation();
  if (res.reservation_id().empty()) {
    return absl::InvalidArgumentError(
        "reservation.reservation_id must not be empty: a prefill worker pushes KV into a "
        "decode worker's reservation");
  }
  if (res.kv_endpoint().find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("reservation.kv_endpoint must be host:port, got \"",
                                                   res.kv_endpoint(), "\""));
  }
  if (res.block_size_tokens() != 0 && res.block_size_tokens() != block_size_tokens_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "reservation.block_size_tokens is ", res.block_size_tokens(),
        " but this prefill worker's KV blocks hold ", block_size_tokens_, " tokens"));
  }
  int64_t kv_tokens = r.token_ids_size() - (fans_out ? 1 : 0);
  int64_t blocks_needed = (kv_tokens + block_size_tokens_ - 1) / block_size_tokens_;
  if (res.block_ids_size() < blocks_needed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "reservation.block_ids has ", res.block_ids_size(), " blocks; the KV of ", kv_tokens,
        " tokens needs ", blocks_needed));
  }
  return absl::OkStatus();
}

absl::StatusOr<EngineRequest> PrefillService::ToEngineRequest(
    const internal::v1::PrefillRequest& r, absl::Time deadline) const {
  absl::StatusOr<SamplingParams> params = SamplingParamsFromProto(r.sampling(), vocab_size_);
  if (!params.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: ", std::string(params.status().message())));
  }
  TANDEM_RETURN_IF_ERROR(Validate(r, params->n > 1 || params->beam_search()));
  auto generated_begin = r.token_ids().end() - r.num_generated();
  return EngineRequest{
      .request_id = r.reservation().reservation_id(),
      .prompt_ids = {r.token_ids().begin(), generated_begin},
      .generated_ids = {generated_begin, r.token_ids().end()},
      .params = *std::move(params),
      .seed = r.seed(),
      .deadline = deadline == absl::InfiniteFuture() ? deadline : deadline + kEngineDeadlineGrace};
}

grpc::ServerUnaryReactor* PrefillService::Prefill(grpc::CallbackServerContext* context,
                                                  const internal::v1::PrefillRequest* request,
                                                  internal::v1::PrefillResponse* response) {
  auto* reactor = new PrefillReactor(ctx_);
  absl::Time deadline = CallDeadline(*context);
  auto call = std::make_shared<PrefillCall>(ctx_, reactor, *request, response,
                                            SendDeadline(deadline, request->reservation()));
  reactor->Bind(call);
  if (ctx_.draining) {
    call->Reject(absl::UnavailableError("prefill worker is draining"));
    return reactor;
  }
  absl::StatusOr<EngineRequest> engine_request = ToEngineRequest(*request, deadline);
  absl::Status status = engine_request.status();
  if (status.ok()) status = ctx_.AddCall(call->id(), call);
  if (!status.ok()) {
    call->Reject(status);
    return reactor;
  }
  reactor->MarkRegistered();
  engine_request->sink = call;
  if (absl::Status added = ctx_.engine.AddRequest(*std::move(engine_request)); !added.ok()) {
    call->Reject(added);
  }
  return reactor;
}

grpc::ServerUnaryReactor* PrefillService::Abort(grpc::CallbackServerContext* context,
                                                const internal::v1::AbortRequest* request,
                                                internal::v1::AbortResponse* response) {
  absl::Status reason = absl::CancelledError(
      absl::StrCat("aborted by the router", request->reason().empty() ? "" : ": ",
                   request->reason()));
  auto calls = ctx_.CallsMatching(request->request_id(), request->reservation_id());
  for (const auto& call : calls) call->Cancel(reason);
  TANDEM_LOG(INFO) << "event=abort request_id=" << request->request_id()
                   << " reservation_id=" << request->reservation_id() << " calls=" << calls.size();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* PrefillService::GetLoad(grpc::CallbackServerContext* context,
                                                  const internal::v1::GetLoadRequest* request,
                                                  internal::v1::LoadReport* response) {
  *response = MakeLoadReport(ctx_.engine.stats(), ctx_.identity(), ctx_.draining, 0);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace tandem
