// An OutputSink that queues outputs for a consumer thread (CLI, tests, blocking callers).
// The engine thread pushes without blocking; the consumer waits with a deadline.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

#include "absl/time/time.h"
#include "common/engine/engine_types.h"

namespace tandem {

class OutputQueue final : public OutputSink {
 public:
  void OnOutput(EngineOutput output) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(output));
    }
    ready_.notify_all();
  }

  // The next output, or nullopt when none arrived before `deadline`.
  std::optional<EngineOutput> Pop(absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    while (queue_.empty()) {
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return std::nullopt;
      ready_.wait_for(lock, absl::ToChronoMilliseconds(left) + std::chrono::milliseconds(1));
    }
    EngineOutput out = std::move(queue_.front());
    queue_.pop_front();
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<EngineOutput> queue_;  // guarded by mu_
};

}  // namespace tandem
