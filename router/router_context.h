// What every request of one router shares: configuration, model, registry, policies,
// clients, timers, admission, and the set of live requests. Owned by RouterServer; each
// member is thread-safe on its own.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "router/admission.h"
#include "router/model_context.h"
#include "router/router_options.h"
#include "router/routing_policy.h"
#include "router/timer_queue.h"
#include "router/worker_clients.h"
#include "router/worker_registry.h"

namespace tandem::router {

class RouterRequest;

// Live requests by serial: a restarted worker's requests are told to move.
class ActiveRequests {
 public:
  uint64_t NextSerial() { return next_serial_.fetch_add(1) + 1; }
  void Add(uint64_t serial, std::weak_ptr<RouterRequest> request) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_[serial] = std::move(request);
  }
  void Remove(uint64_t serial) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.erase(serial);
  }
  std::vector<std::shared_ptr<RouterRequest>> Snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::shared_ptr<RouterRequest>> out;
    for (const auto& [serial, weak] : requests_) {
      if (auto request = weak.lock()) out.push_back(std::move(request));
    }
    return out;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_.size();
  }
  // RouterRequest objects alive (finished ones live on until their last worker callback).
  void AddLive(int delta) {
    std::lock_guard<std::mutex> lock(mu_);
    live_ += delta;
    if (live_ == 0) cv_.notify_all();
  }
  // Shutdown: waits until no request object (and so no worker callback) remains.
  bool WaitNoneLive(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return live_ == 0; });
  }

 private:
  std::atomic<uint64_t> next_serial_{0};
  mutable std::mutex mu_;
  absl::flat_hash_map<uint64_t, std::weak_ptr<RouterRequest>> requests_ ABSL_GUARDED_BY(mu_);
  int64_t live_ ABSL_GUARDED_BY(mu_) = 0;
  std::condition_variable cv_;
};

struct RouterContext {
  const RouterOptions* options = nullptr;
  const ModelContext* model = nullptr;
  WorkerRegistry* registry = nullptr;
  RoutingPolicy* prefill_policy = nullptr;
  RoutingPolicy* decode_policy = nullptr;
  WorkerClients* clients = nullptr;
  TimerQueue* timers = nullptr;
  Admission* admission = nullptr;
  ActiveRequests* active = nullptr;
};

}  // namespace tandem::router
