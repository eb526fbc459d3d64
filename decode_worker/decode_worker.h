// The decode worker process's parts, assembled and torn down in order: the engine (decode
// role) with its KV memory, the TCP KV receiver writing into it, the reservation table,
// the arrival poller, and the gRPC server. Teardown runs the other way round, and the
// receiver is gone before the engine (it writes into the engine's KV memory).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "decode_worker/decode_context.h"
#include "decode_worker/decode_service.h"
#include "decode_worker/kv_arrival_poller.h"
#include "common/service/worker/grpc_server.h"
#include "common/service/worker/worker_main.h"
#include "common/service/worker/worker_model.h"
#include "kv_transfer/kv_transfer.h"

namespace tandem {

inline constexpr char kDecodeHealthService[] = "tandem.internal.v1.DecodeWorker";

class DecodeWorker final : public RunningWorker {
 public:
  // Loads the model, binds --kv_listen and --listen, starts serving.
  static absl::StatusOr<std::unique_ptr<DecodeWorker>> Start(const WorkerOptions& options);
  ~DecodeWorker() override;  // Shutdown()

  const internal::v1::WorkerIdentity& identity() const override { return identity_; }
  std::string kv_address() const override { return receiver_->endpoint(); }
  void Drain(absl::Time deadline) override;
  void Shutdown() override;

 private:
  explicit DecodeWorker(WorkerModel model) : model_(std::move(model)) {}
  absl::Status Init(const WorkerOptions& options);

  WorkerModel model_;
  internal::v1::WorkerIdentity identity_;
  std::unique_ptr<KvReceiver> receiver_;
  ReservationTable table_;
  std::unique_ptr<DecodeContext> ctx_;
  std::unique_ptr<DecodeService> service_;
  std::unique_ptr<KvArrivalPoller> poller_;
  std::unique_ptr<GrpcServer> server_;
  bool shut_down_ = false;
};

}  // namespace tandem
