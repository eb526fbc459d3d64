// The job bookkeeping of a KvSender with one I/O thread (TCP and NCCL share it): transfer
// ids, the FIFO the thread takes jobs from, cancellation marks, first tokens supplied late
// (KvSendRequest::first_token_pending) and final statuses, each reported by Poll once.
// Thread-safe.
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
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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

  // Records a job's final status (and forgets its cancellation mark and first token).
  void Finish(uint64_t id, absl::Status status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_.erase(id);
      first_tokens_.erase(id);
      done_[id] = std::move(status);
      ++finished_;
    }
    wake_.notify_all();
  }

  // Waits up to `timeout` for a Finish since the previous return of this call (for one
  // watcher: KvSender::WaitForProgress), so a Finish between two calls is never missed.
  void WaitForFinish(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    wake_.wait_for(lock, absl::ToChronoMicroseconds(timeout),
                   [&] { return stopping_ || finished_ != observed_; });
    observed_ = finished_;
  }

  void SetFirstToken(uint64_t id, KvFirstToken token) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_.contains(id) || id >= next_id_) return;
      first_tokens_[id] = token;
    }
    wake_.notify_all();
  }

  // The I/O thread: the first token of job `id` once supplied; CANCELLED once the job is
  // cancelled (or the queue stops), DEADLINE_EXCEEDED at `deadline`.
  absl::StatusOr<KvFirstToken> WaitFirstToken(uint64_t id, absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      if (auto it = first_tokens_.find(id); it != first_tokens_.end()) return it->second;
      if (cancelled_.contains(id) || stopping_) {
        return absl::CancelledError("kv transfer cancelled before its first token");
      }
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError("no first token before the transfer's deadline");
      }
      wake_.wait_for(lock, absl::ToChronoMicroseconds(left));
    }
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
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!done_.contains(id)) cancelled_.insert(id);
    }
    wake_.notify_all();  // a thread in WaitFirstToken
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
  std::map<uint64_t, KvFirstToken> first_tokens_;  // guarded by mu_
  uint64_t finished_ = 0;                  // guarded by mu_: Finish calls
  uint64_t observed_ = 0;                  // guarded by mu_: finished_ at WaitForFinish
  uint64_t next_id_ = 1;                   // guarded by mu_
  bool stopping_ = false;                  // guarded by mu_
};

}  // namespace tandem
