#include "common/service/worker/worker_main.h"

#include <optional>

#include "common/logging.h"
#include "common/service/process_identity.h"
#include "common/service/worker/router_registration.h"

namespace tandem {

int RunUntilShutdownSignal(RunningWorker& worker, const WorkerOptions& options) {
  const internal::v1::WorkerIdentity& id = worker.identity();
  if (!options.ready_file.empty()) {
    absl::Status written =
        WriteReadyFile(options.ready_file, id.name(), id.grpc_address(), worker.kv_address());
    if (!written.ok()) {
      TANDEM_LOG(ERROR) << "event=ready_file_failed error=\"" << written.message() << "\"";
      worker.Shutdown();
      return 1;
    }
  }
  TANDEM_LOG(INFO) << "event=serving name=" << id.name() << " grpc=" << id.grpc_address()
                   << " kv=" << worker.kv_address() << " incarnation=" << id.incarnation();
  std::optional<RouterRegistration> registration;
  if (!options.router.empty()) registration.emplace(options.router, id);
  while (!WaitForShutdown(absl::Hours(1))) {
  }
  TANDEM_LOG(INFO) << "event=draining name=" << id.name();
  worker.Drain(absl::Now() + kDrainTimeout);
  registration.reset();
  worker.Shutdown();
  TANDEM_LOG(INFO) << "event=stopped name=" << id.name();
  return 0;
}

}  // namespace tandem
