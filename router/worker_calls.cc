#include "router/worker_calls.h"

namespace tandem::router {

std::shared_ptr<DecodeCall> DecodeCall::Create(internal_v1::DecodeRequest request,
                                               absl::Time deadline, EventFn on_event,
                                               DoneFn on_done) {
  std::shared_ptr<DecodeCall> call(new DecodeCall());
  call->request_ = std::move(request);
  call->context_.set_deadline(absl::ToChronoTime(deadline));
  call->on_event_ = std::move(on_event);
  call->on_done_ = std::move(on_done);
  call->self_ = call;
  return call;
}

void DecodeCall::Start(internal_v1::DecodeWorker::Stub* stub) {
  stub->async()->Decode(&context_, &request_, this);
  StartRead(&event_);
  StartCall();
}

void DecodeCall::OnReadDone(bool ok) {
  if (!ok) return;  // the stream ended; OnDone follows with the status
  on_event_(event_);
  event_.Clear();
  StartRead(&event_);
}

void DecodeCall::OnDone(const grpc::Status& status) {
  std::shared_ptr<DecodeCall> keep = std::move(self_);  // freed when this returns
  DoneFn done = std::move(on_done_);
  on_event_ = nullptr;
  done(status);
}

namespace {

constexpr absl::Duration kAbortTimeout = absl::Seconds(1);

internal_v1::AbortRequest MakeAbort(const std::string& request_id,
                                    const std::string& reservation_id,
                                    const std::string& reason) {
  internal_v1::AbortRequest r;
  r.set_request_id(request_id);
  r.set_reservation_id(reservation_id);
  r.set_reason(reason);
  return r;
}

}  // namespace

void SendDecodeAbort(WorkerClients& clients, const std::string& address,
                     const std::string& request_id, const std::string& reservation_id,
                     const std::string& reason) {
  using Call = UnaryCall<internal_v1::AbortRequest, internal_v1::AbortResponse>;
  auto call = std::make_shared<Call>();
  call->request = MakeAbort(request_id, reservation_id, reason);
  call->context.set_deadline(absl::ToChronoTime(absl::Now() + kAbortTimeout));
  clients.Get(address).decode->async()->Abort(&call->context, &call->request, &call->response,
                                              [call](grpc::Status) {});
}

void SendPrefillAbort(WorkerClients& clients, const std::string& address,
                      const std::string& request_id, const std::string& reason) {
  using Call = UnaryCall<internal_v1::AbortRequest, internal_v1::AbortResponse>;
  auto call = std::make_shared<Call>();
  call->request = MakeAbort(request_id, "", reason);
  call->context.set_deadline(absl::ToChronoTime(absl::Now() + kAbortTimeout));
  clients.Get(address).prefill->async()->Abort(&call->context, &call->request,
                                               &call->response, [call](grpc::Status) {});
}

}  // namespace tandem::router
