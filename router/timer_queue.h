// One thread that runs callbacks at given times: backoff waits and queue deadlines.
// Callbacks run on the timer thread and must not block. Cancel is best-effort (a callback
// already running is not stopped). The destructor drops pending callbacks and joins.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace tandem::router {

class TimerQueue {
 public:
  TimerQueue();
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `fn` at `when` (at once when it passed). Returns an id for Cancel.
  uint64_t Schedule(absl::Time when, std::function<void()> fn);
  // True when `id` was still pending and is now dropped.
  bool Cancel(uint64_t id);

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // (time, id) -> callback, earliest first.
  std::map<std::pair<absl::Time, uint64_t>, std::function<void()>> timers_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, absl::Time> when_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace tandem::router
