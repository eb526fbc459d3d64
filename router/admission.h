// Admission control: at most `max_inflight` requests run; up to `max_queue` more wait in
// arrival order; anything beyond is rejected at once (the caller answers
// RESOURCE_EXHAUSTED). Thread-safe; `start` callbacks run outside the lock, on the thread
// that freed the slot (they must not block).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"

namespace tandem::router {

class Admission {
 public:
  enum class Decision { kRunNow, kQueued, kRejected, kClosed };

  Admission(int32_t max_inflight, int32_t max_queue)
      : max_inflight_(max_inflight), max_queue_(max_queue) {}

  // kRunNow: the caller holds a slot and runs now (`start` is dropped). kQueued: `start`
  // runs later, holding a slot, unless Withdraw(id) removes it first. kRejected: full.
  // kClosed: draining, no new work.
  Decision Enter(uint64_t id, std::function<void()> start);
  // Removes a queued entry (deadline or cancellation). False when it is not queued (it
  // already started, or never was): then the caller holds a slot if it started.
  bool Withdraw(uint64_t id);
  // A running request finished: its slot goes to the oldest queued entry, if any.
  void Release();
  // Drain: new Enter calls get kClosed; queued entries still run.
  void Close();

  int32_t num_running() const;
  int32_t num_queued() const;

 private:
  struct Waiter {
    uint64_t id;
    std::function<void()> start;
  };

  const int32_t max_inflight_;
  const int32_t max_queue_;
  mutable std::mutex mu_;
  int32_t running_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  std::list<Waiter> queue_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::list<Waiter>::iterator> queued_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem::router
