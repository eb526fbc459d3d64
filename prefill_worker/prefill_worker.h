// The prefill worker process's parts, assembled and torn down in order: the engine
// (prefill role) with its KV memory, the TCP KV sender reading from it, the transfer
// poller, and the gRPC server. The sender is gone before the engine (it reads the
// engine's KV memory).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/service/worker/grpc_server.h"
#include "common/service/worker/worker_main.h"
#include "common/service/worker/worker_model.h"
#include "kv_transfer/kv_transfer.h"
#include "prefill_worker/prefill_context.h"
#include "prefill_worker/prefill_service.h"
#include "prefill_worker/transfer_poller.h"

namespace tandem {

inline constexpr char kPrefillHealthService[] = "tandem.internal.v1.PrefillWorker";

class PrefillWorker final : public RunningWorker {
 public:
  static absl::StatusOr<std::unique_ptr<PrefillWorker>> Start(const WorkerOptions& options);
  ~PrefillWorker() override;  // Shutdown()

  const internal::v1::WorkerIdentity& identity() const override { return identity_; }
  std::string kv_address() const override { return ""; }
  void Drain(absl::Time deadline) override;
  void Shutdown() override;

 private:
  explicit PrefillWorker(WorkerModel model) : model_(std::move(model)) {}
  absl::Status Init(const WorkerOptions& options);

  WorkerModel model_;
  internal::v1::WorkerIdentity identity_;
  std::unique_ptr<KvSender> sender_;
  std::unique_ptr<TransferPoller> poller_;
  std::unique_ptr<PrefillContext> ctx_;
  std::unique_ptr<PrefillService> service_;
  std::unique_ptr<GrpcServer> server_;
  bool shut_down_ = false;
};

}  // namespace tandem
