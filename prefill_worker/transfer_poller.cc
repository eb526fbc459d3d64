#include "prefill_worker/transfer_poller.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"

namespace tandem {

TransferPoller::TransferPoller(KvSender& sender) : sender_(sender) {
  thread_ = std::thread([this] { Loop(); });
}

TransferPoller::~TransferPoller() { Stop(); }

void TransferPoller::Watch(uint64_t transfer_id, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    watched_[transfer_id] = std::move(done);
  }
  wake_.notify_all();
}

void TransferPoller::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void TransferPoller::Loop() {
  while (true) {
    std::vector<uint64_t> ids;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !watched_.empty(); });
      if (stopping_) return;
      for (const auto& [id, done] : watched_) ids.push_back(id);
    }
    for (uint64_t id : ids) {
      std::optional<absl::Status> status = sender_.Poll(id);
      if (!status) continue;
      Done done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        done = std::move(watched_[id]);
        watched_.erase(id);
      }
      done(*std::move(status));  // outside the lock: it may call Watch or the engine
    }
    // Wakes as soon as a transfer finishes (or after the timeout: Stop and new watches).
    sender_.WaitForProgress(absl::Milliseconds(20));
  }
}

}  // namespace tandem
