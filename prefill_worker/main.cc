// tandem-prefill: the prefill worker (DESIGN.md §1). Flags: see --help and docs/workers.md.
#include <iostream>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/logging.h"
#include "common/service/process_identity.h"
#include "common/service/worker/worker_flags.h"
#include "prefill_worker/prefill_worker.h"

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("tandem-prefill: the prefill worker (prefill, push KV)");
  absl::ParseCommandLine(argc, argv);
  tandem::InstallShutdownSignalHandlers();
  tandem::WorkerOptions options = tandem::WorkerOptionsFromFlags();
  if (absl::Status valid = tandem::ValidateWorkerOptions(options); !valid.ok()) {
    std::cerr << "tandem-prefill: " << valid.message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<tandem::PrefillWorker>> worker =
      tandem::PrefillWorker::Start(options);
  if (!worker.ok()) {
    TANDEM_LOG(ERROR) << "event=start_failed error=\"" << worker.status().message() << "\"";
    return 1;
  }
  return tandem::RunUntilShutdownSignal(**worker, options);
}
