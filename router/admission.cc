#include "router/admission.h"

#include <utility>

namespace tandem::router {

Admission::Decision Admission::Enter(uint64_t id, std::function<void()> start) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return Decision::kClosed;
  if (running_ < max_inflight_ && queue_.empty()) {
    ++running_;
    return Decision::kRunNow;
  }
  if (static_cast<int32_t>(queue_.size()) >= max_queue_) return Decision::kRejected;
  queue_.push_back(Waiter{id, std::move(start)});
  queued_[id] = std::prev(queue_.end());
  return Decision::kQueued;
}

bool Admission::Withdraw(uint64_t id) {
  std::function<void()> dropped;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queued_.find(id);
  if (it == queued_.end()) return false;
  dropped = std::move(it->second->start);
  queue_.erase(it->second);
  queued_.erase(it);
  return true;
}

void Admission::Release() {
  std::function<void()> next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty()) {
      --running_;
      return;
    }
    next = std::move(queue_.front().start);
    queued_.erase(queue_.front().id);
    queue_.pop_front();  // the slot passes to `next`: running_ is unchanged
  }
  next();
}

void Admission::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
}

int32_t Admission::num_running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

int32_t Admission::num_queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(queue_.size());
}

}  // namespace tandem::router
