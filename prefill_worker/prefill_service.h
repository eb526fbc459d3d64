// tandem.internal.v1.PrefillWorker on gRPC's callback API (docs/protocol.md steps 5-8).
// Prefill validates, registers a PrefillCall and queues it in the engine (prefill role);
// the call pushes the KV when the engine hands it over and answers when the push ends.
#pragma once

#include <cstdint>

#include "prefill_worker/prefill_context.h"
#include "tandem/internal/v1/worker.grpc.pb.h"

namespace tandem {

class PrefillService final : public internal::v1::PrefillWorker::CallbackService {
 public:
  explicit PrefillService(PrefillContext& ctx);

  grpc::ServerUnaryReactor* Prefill(grpc::CallbackServerContext* context,
                                    const internal::v1::PrefillRequest* request,
                                    internal::v1::PrefillResponse* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const internal::v1::AbortRequest* request,
                                  internal::v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const internal::v1::GetLoadRequest* request,
                                    internal::v1::LoadReport* response) override;

 private:
  absl::Status Validate(const internal::v1::PrefillRequest& request, bool fans_out) const;
  absl::StatusOr<EngineRequest> ToEngineRequest(const internal::v1::PrefillRequest& request,
                                                absl::Time deadline) const;

  PrefillContext& ctx_;
  const int64_t vocab_size_;
  const int64_t block_size_tokens_;
};

}  // namespace tandem
