// The router's view of its workers: registrations and load reports in, healthy candidates
// out. Thread-safe (one mutex; every method is short and never blocks on I/O). Time is
// passed in, so tests use a fake clock.
//
// Health: a worker is a candidate while its last report is younger than report_timeout and
// its circuit breaker is closed. The breaker opens after `breaker_failures` consecutive
// failed calls and lets one trial request through after `breaker_cooldown` (half-open);
// a success closes it. A registration with a new incarnation replaces the old entry.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "router/worker_view.h"

namespace tandem::router {

struct RegistryOptions {
  absl::Duration report_timeout = absl::Seconds(5);
  int breaker_failures = 3;
  absl::Duration breaker_cooldown = absl::Seconds(2);
  bool static_workers = false;  // statically configured: healthy without load reports
};

class WorkerRegistry {
 public:
  explicit WorkerRegistry(RegistryOptions options) : options_(options) {}

  // Registration or load report. Returns true when this is a new incarnation of a known
  // worker (its old in-flight requests are lost and must be retried or migrated).
  bool Upsert(const WorkerView& report, absl::Time now);
  void Remove(const std::string& name);
  void RecordFailure(const std::string& name, absl::Time now);
  void RecordSuccess(const std::string& name);
  void AddInflight(const std::string& name, int delta);

  // Healthy workers that can serve `role` (colocated workers serve both).
  std::vector<WorkerView> Candidates(WorkerRole role, absl::Time now) const;
  std::vector<WorkerView> All() const;

 private:
  struct Entry {
    WorkerView view;
    absl::Time last_report;
    int consecutive_failures = 0;
    absl::Time open_until = absl::InfinitePast();
  };
  bool Healthy(const Entry& entry, absl::Time now) const;

  const RegistryOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> workers_;  // guarded by mu_
};

}  // namespace tandem::router
