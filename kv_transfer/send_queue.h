// The job bookkeeping of a KvSender with one I/O thread (TCP and NCCL share it): transfer
// ids, the FIFO the thread takes jobs from, cancellation marks and final statuses, each
// status reported by Poll once. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "kv_transfer/kv_transfer.h"

namespace tandem {

class KvSendQueue {
 public:
  using Job = std::pair<uint64_t, KvSendRequest>;

  uint64_t Push(KvSendRequest request) {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t id = next_id_++;
    queue_.emplace_back(id, std::move(request));
    wake_.notify_all();
    return id;
  }

  // The I/O thread: the next job, or nullopt once Stop was called.
  std::optional<Job> Next() {
    std::unique_lock<std::mutex> lock(mu_);
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return std::nullopt;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    return job;
  }

  // Records a job's final status (and forgets its cancellation mark).
  void Finish(uint64_t id, absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.erase(id);
    done_[id] = std::move(status);
  }

  std::optional<absl::Status> Poll(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = done_.find(id);
    if (it == done_.end()) return std::nullopt;
    absl::Status status = std::move(it->second);
    done_.erase(it);
    return status;
  }

  void Cancel(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_.contains(id)) cancelled_.insert(id);
  }

  bool Cancelled(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_.contains(id);
  }

  // Next returns nullopt from now on (jobs still queued are dropped).
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job> queue_;                  // guarded by mu_
  std::map<uint64_t, absl::Status> done_;  // guarded by mu_
  std::set<uint64_t> cancelled_;           // guarded by mu_
  uint64_t next_id_ = 1;                   // guarded by mu_
  bool stopping_ = false;                  // guarded by mu_
};

}  // namespace tandem
