// tandem.internal.v1.DecodeWorker on gRPC's callback API (docs/protocol.md steps 3, 4, 9-11).
// Reactions validate, then hand work to the engine's inbox or the reservation table; none
// blocks. Reserve answers from the engine thread once the blocks are allocated.
#pragma once

#include <atomic>
#include <cstdint>

#include "decode_worker/decode_context.h"
#include "tandem/internal/v1/worker.grpc.pb.h"

namespace tandem {

class DecodeService final : public internal::v1::DecodeWorker::CallbackService {
 public:
  explicit DecodeService(DecodeContext& ctx);

  grpc::ServerUnaryReactor* Reserve(grpc::CallbackServerContext* context,
                                    const internal::v1::ReserveRequest* request,
                                    internal::v1::ReserveResponse* response) override;
  grpc::ServerWriteReactor<internal::v1::DecodeEvent>* Decode(
      grpc::CallbackServerContext* context, const internal::v1::DecodeRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const internal::v1::AbortRequest* request,
                                  internal::v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const internal::v1::GetLoadRequest* request,
                                    internal::v1::LoadReport* response) override;

 private:
  absl::Status ValidateReserve(const internal::v1::ReserveRequest& request) const;
  absl::StatusOr<EngineRequest> ToEngineRequest(const internal::v1::DecodeRequest& request,
                                                absl::Time deadline) const;
  void FillReservation(const std::string& id, const Reservation& reserved, absl::Time lease,
                       internal::v1::Reservation* out) const;

  DecodeContext& ctx_;
  const int64_t vocab_size_;
  const int64_t context_tokens_;
  const int64_t block_size_tokens_;
  std::atomic<uint64_t> next_reservation_{1};
};

}  // namespace tandem
