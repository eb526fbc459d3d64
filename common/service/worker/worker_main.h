// The life of a worker process after its server is up: ready file, optional router
// registration, wait for SIGTERM/SIGINT, drain, clean shutdown (DESIGN.md §8).
#pragma once

#include <string>

#include "absl/time/time.h"
#include "common/service/worker/worker_options.h"
#include "tandem/internal/v1/worker.pb.h"

namespace tandem {

// What main needs of a running worker (PrefillWorker, DecodeWorker).
class RunningWorker {
 public:
  virtual ~RunningWorker() = default;
  virtual const internal::v1::WorkerIdentity& identity() const = 0;
  virtual std::string kv_address() const = 0;  // empty for a prefill worker
  // Refuses new work (UNAVAILABLE), reports draining, and waits until the work in flight
  // finished or `deadline` passed.
  virtual void Drain(absl::Time deadline) = 0;
  // Stops the server (cancelling what still runs), the engine and the transport.
  virtual void Shutdown() = 0;
};

inline constexpr absl::Duration kDrainTimeout = absl::Seconds(30);

// Runs `worker` until a shutdown signal, then drains and shuts it down. Returns the exit code.
int RunUntilShutdownSignal(RunningWorker& worker, const WorkerOptions& options);

}  // namespace tandem
