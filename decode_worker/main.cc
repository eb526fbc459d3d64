// tandem-decode: the decode worker (DESIGN.md §1). Flags: see --help and docs/workers.md.
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/logging.h"
#include "common/service/process_identity.h"
#include "decode_worker/decode_worker.h"
#include "common/service/worker/worker_flags.h"

ABSL_FLAG(std::string, kv_listen, "127.0.0.1:0",
          "host:port of the KV receiver prefill workers push into; port 0 picks a free port");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("tandem-decode: the decode worker (reserve, receive KV, decode)");
  absl::ParseCommandLine(argc, argv);
  tandem::InstallShutdownSignalHandlers();
  tandem::WorkerOptions options = tandem::WorkerOptionsFromFlags();
  options.kv_listen = absl::GetFlag(FLAGS_kv_listen);
  if (absl::Status valid = tandem::ValidateWorkerOptions(options); !valid.ok()) {
    std::cerr << "tandem-decode: " << valid.message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<tandem::DecodeWorker>> worker =
      tandem::DecodeWorker::Start(options);
  if (!worker.ok()) {
    TANDEM_LOG(ERROR) << "event=start_failed error=\"" << worker.status().message() << "\"";
    return 1;
  }
  return tandem::RunUntilShutdownSignal(**worker, options);
}
