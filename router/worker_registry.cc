#include "router/worker_registry.h"

namespace tandem::router {

bool WorkerRegistry::Upsert(const WorkerView& report, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = workers_.try_emplace(report.name);
  Entry& entry = it->second;
  bool restarted = !inserted && entry.view.incarnation != report.incarnation;
  int inflight = restarted ? 0 : entry.view.num_inflight;
  entry.view = report;
  entry.view.num_inflight = inflight;
  entry.last_report = now;
  if (restarted) {
    entry.consecutive_failures = 0;
    entry.open_until = absl::InfinitePast();
  }
  return restarted;
}

void WorkerRegistry::Remove(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  workers_.erase(name);
}

void WorkerRegistry::RecordFailure(const std::string& name, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(name);
  if (it == workers_.end()) return;
  if (++it->second.consecutive_failures >= options_.breaker_failures) {
    it->second.open_until = now + options_.breaker_cooldown;
  }
}

void WorkerRegistry::RecordSuccess(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(name);
  if (it == workers_.end()) return;
  it->second.consecutive_failures = 0;
  it->second.open_until = absl::InfinitePast();
}

void WorkerRegistry::AddInflight(const std::string& name, int delta) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(name);
  if (it != workers_.end()) it->second.view.num_inflight += delta;
}

bool WorkerRegistry::Healthy(const Entry& entry, absl::Time now) const {
  bool fresh = options_.static_workers || now - entry.last_report <= options_.report_timeout;
  bool breaker_open = entry.consecutive_failures >= options_.breaker_failures &&
                      now < entry.open_until;
  return fresh && !breaker_open;
}

std::vector<WorkerView> WorkerRegistry::Candidates(WorkerRole role, absl::Time now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerView> out;
  for (const auto& [name, entry] : workers_) {
    bool serves = entry.view.role == role || entry.view.role == WorkerRole::kColocated;
    if (serves && Healthy(entry, now)) out.push_back(entry.view);
  }
  return out;
}

std::vector<WorkerView> WorkerRegistry::All() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerView> out;
  for (const auto& [name, entry] : workers_) out.push_back(entry.view);
  return out;
}

}  // namespace tandem::router
