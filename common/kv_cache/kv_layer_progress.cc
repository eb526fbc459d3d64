#include "common/kv_cache/kv_layer_progress.h"

#include <algorithm>

#include "common/status.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace tandem {

void KvLayerProgress::LayerWritten(int64_t layer, void* device_event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (layer < 0 || layer >= num_layers() || layer != published_ || complete_) return;
    events_[layer] = device_event;
    published_ = layer + 1;
  }
  changed_.notify_all();
}

void KvLayerProgress::Complete() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    complete_ = true;
  }
  changed_.notify_all();
}

void KvLayerProgress::Fail(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (complete_ || !failed_.ok()) return;
    failed_ = status.ok() ? absl::InternalError("forward pass failed") : std::move(status);
  }
  changed_.notify_all();
}

absl::Status KvLayerProgress::WaitUntil(std::unique_lock<std::mutex>& lock, absl::Time deadline,
                                        const std::function<bool()>& ready,
                                        const std::function<std::string()>& waiting_for) {
  while (!ready()) {
    if (!failed_.ok()) return failed_;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("kv layers: ", waiting_for()));
    }
    changed_.wait_for(lock, absl::ToChronoMicroseconds(left));
  }
  return absl::OkStatus();
}

absl::StatusOr<void*> KvLayerProgress::WaitForLayers(int64_t n, absl::Time deadline) {
  n = std::clamp<int64_t>(n, 0, num_layers());
  std::unique_lock<std::mutex> lock(mu_);
  TANDEM_RETURN_IF_ERROR(WaitUntil(
      lock, deadline, [&] { return complete_ || published_ >= n; },
      [&] { return absl::StrCat(published_, " of the ", n, " needed were written before the deadline"); }));
  // Complete: the runner synchronized, nothing left to wait on.
  return complete_ || n == 0 ? nullptr : events_[n - 1];
}

absl::Status KvLayerProgress::WaitForComplete(absl::Time deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return WaitUntil(lock, deadline, [&] { return complete_; },
                   [] { return std::string("the forward pass did not finish before the deadline"); });
}

absl::Status KvLayerProgress::WaitForHostLayers(int64_t n, absl::Time deadline) {
  absl::StatusOr<void*> written = WaitForLayers(n, deadline);
  if (!written.ok()) return written.status();
  return *written == nullptr ? absl::OkStatus() : WaitForComplete(deadline);
}

}  // namespace tandem
