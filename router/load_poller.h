// Feeds the registry: every poll_interval it calls GetLoad (deadline poll_timeout) on every
// known worker address, asynchronously, and upserts the report. A report with a new
// incarnation calls `on_restart(name)` (the old process's requests are lost); a draining
// worker is removed; failed polls count against the worker's circuit breaker and a worker
// whose reports stop goes stale (RegistryOptions::report_timeout). After each tick
// `on_health(serving)` says whether a prefill-capable and a decode-capable worker are
// healthy (a decode worker alone when no prefill worker is known: it runs whole requests). Callbacks run on gRPC or poller threads and must not block.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"
#include "router/worker_clients.h"
#include "router/worker_registry.h"

namespace tandem::router {

struct LoadPollerOptions {
  absl::Duration interval = absl::Milliseconds(250);
  absl::Duration timeout = absl::Seconds(1);
};

// The registry's view of one report; `address` is where it was polled from.
WorkerView ViewFromReport(const internal_v1::LoadReport& report, const std::string& address,
                          WorkerRole role_hint);

class LoadPoller {
 public:
  using RestartListener = std::function<void(const std::string& worker_name)>;
  using HealthListener = std::function<void(bool serving)>;

  LoadPoller(LoadPollerOptions options, WorkerRegistry* registry, WorkerClients* clients,
             RestartListener on_restart, HealthListener on_health);
  ~LoadPoller();  // Stop()

  // Idempotent; a new address is polled from the next tick.
  void AddTarget(const std::string& address, WorkerRole role_hint);
  // Handles a report from any source (poll, Registry.ReportLoad).
  void OnReport(const internal_v1::LoadReport& report, const std::string& address,
                WorkerRole role_hint);
  void Start();
  // Stops ticking and waits for outstanding polls (each has a deadline).
  void Stop();

 private:
  struct Target {
    WorkerRole role_hint;
    std::string name;  // from its last report; empty until one arrived
    bool in_flight = false;
  };
  void Loop();
  void Tick();
  void Poll(const std::string& address, WorkerRole role_hint);
  void OnPollDone(const std::string& address, const grpc::Status& status,
                  const internal_v1::LoadReport& report);

  const LoadPollerOptions options_;
  WorkerRegistry* const registry_;
  WorkerClients* const clients_;
  const RestartListener on_restart_;
  const HealthListener on_health_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, Target> targets_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace tandem::router
