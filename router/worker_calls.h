// Asynchronous calls to workers on gRPC's callback client API: nothing here blocks.
// Each call object owns its ClientContext, request and response; a shared_ptr to it keeps
// them alive until the completion callback ran, and Cancel() is safe at any time.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "router/worker_clients.h"

namespace tandem::router {

template <typename Request, typename Response>
struct UnaryCall {
  grpc::ClientContext context;
  Request request;
  Response response;
  void Cancel() { context.TryCancel(); }
};

// The Decode server stream: events arrive one at a time (the next read starts after
// `on_event` returned), then `on_done` once with the final status.
class DecodeCall final : public grpc::ClientReadReactor<internal_v1::DecodeEvent> {
 public:
  using EventFn = std::function<void(const internal_v1::DecodeEvent&)>;
  using DoneFn = std::function<void(const grpc::Status&)>;

  static std::shared_ptr<DecodeCall> Create(internal_v1::DecodeRequest request,
                                            absl::Time deadline, EventFn on_event,
                                            DoneFn on_done);
  // Starts the stream; call once, outside any lock the callbacks take.
  void Start(internal_v1::DecodeWorker::Stub* stub);
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  DecodeCall() = default;

  grpc::ClientContext context_;
  internal_v1::DecodeRequest request_;
  internal_v1::DecodeEvent event_;
  EventFn on_event_;
  DoneFn on_done_;
  std::shared_ptr<DecodeCall> self_;  // alive until OnDone
};

// Fire-and-forget Abort (deadline 1 s) to a decode or prefill worker; idempotent there.
void SendDecodeAbort(WorkerClients& clients, const std::string& address,
                     const std::string& request_id, const std::string& reservation_id,
                     const std::string& reason);
void SendPrefillAbort(WorkerClients& clients, const std::string& address,
                      const std::string& request_id, const std::string& reason);

}  // namespace tandem::router
