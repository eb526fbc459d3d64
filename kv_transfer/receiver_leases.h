// The lease bookkeeping every KvReceiver shares (TCP, NCCL): reservations expected until a
// deadline, arrivals reported once, and a wait that wakes for an arrival or the earliest
// lease. Each receiver keeps its own map (its Pending carries transport state) and lock;
// these run with that lock held.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kv_transfer/kv_transfer.h"

namespace tandem {

// Reports every reservation whose lease passed by `now` (DEADLINE_EXCEEDED) and removes it
// with `forget(it)`, which returns the next iterator (a transport may wait for its writes).
template <typename Pending, typename Forget>
void ExpireLeases(std::map<std::string, Pending>& pending, std::vector<KvArrival>& arrivals,
                  absl::Time now, Forget forget) {
  for (auto it = pending.begin(); it != pending.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    arrivals.push_back({.reservation_id = it->first,
                        .status = absl::DeadlineExceededError(absl::StrCat(
                            "no complete KV for reservation ", it->first, " before its lease"))});
    it = forget(it);
  }
}

// Waits on `arrived` until `arrivals` is not empty, the earliest lease in `pending` has
// passed, or `timeout`; `lock` holds the receiver's lock.
template <typename Pending>
void WaitForArrivalOrLease(std::unique_lock<std::mutex>& lock, std::condition_variable& arrived,
                           const std::map<std::string, Pending>& pending,
                           const std::vector<KvArrival>& arrivals, absl::Duration timeout) {
  absl::Time wake = absl::Now() + timeout;
  for (const auto& [id, p] : pending) wake = std::min(wake, p.deadline);
  const absl::Duration left = wake - absl::Now();
  if (arrivals.empty() && left > absl::ZeroDuration()) {
    // +1 ms: wake just after the earliest lease, not just before it
    arrived.wait_for(lock, absl::ToChronoMicroseconds(left) + std::chrono::milliseconds(1),
                     [&arrivals] { return !arrivals.empty(); });
  }
}

}  // namespace tandem
