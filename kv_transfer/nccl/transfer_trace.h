// Per-transfer stage timestamps for finding where a transfer's time goes (bench, debugging):
// logged as one line per transfer and side when the environment sets TANDEM_KV_TRACE=1,
// in microseconds since the process's first trace, so a sender and a receiver in one
// process (kv_transfer_bench) line up. Free when off: Mark is a branch.
#pragma once

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/backend/cuda/cuda_handles.h"
#include "common/logging.h"

namespace tandem {

class TransferTrace {
 public:
  explicit TransferTrace(const char* side) : side_(side), enabled_(Enabled()) {
    if (enabled_) Epoch();  // fixed before this transfer's first mark
  }

  void Mark(const char* stage) {
    if (enabled_) marks_.emplace_back(stage, absl::Now());
  }

  bool enabled() const { return enabled_; }

  // GPU-side marks: an event recorded on `stream` (when the stream reaches this point);
  // Log prints each as microseconds after the first GPU mark.
  // `stage` and `index` name the mark ("g" and 2: "g2").
  void MarkGpu(const char* stage, int64_t index, cudaStream_t stream) {
    if (!enabled_) return;
    absl::StatusOr<CudaEvent> event = CudaEvent::Create();
    if (!event.ok()) return;
    event->Record(stream);
    gpu_marks_.emplace_back(index < 0 ? std::string(stage) : absl::StrCat(stage, index),
                            std::move(*event));
  }

  void Log(const std::string& reservation_id) const {
    if (!enabled_ || marks_.empty()) return;
    std::string line = absl::StrCat("kv_trace side=", side_, " id=", reservation_id);
    for (const auto& [stage, at] : marks_) {
      absl::StrAppend(&line, " ", stage, "=", absl::ToInt64Microseconds(at - Epoch()));
    }
    if (!gpu_marks_.empty()) absl::StrAppend(&line, " gpu:");
    for (const auto& [stage, event] : gpu_marks_) {
      event.Synchronize();
      absl::StrAppend(&line, " ", stage, "=",
                      static_cast<int64_t>(1000 * event.ElapsedMsSince(gpu_marks_[0].second)));
    }
    TANDEM_LOG(INFO) << line;
  }

 private:
  static bool Enabled() {
    static const bool enabled = [] {
      const char* v = std::getenv("TANDEM_KV_TRACE");
      return v != nullptr && std::string(v) == "1";
    }();
    return enabled;
  }
  static absl::Time Epoch() {
    static const absl::Time epoch = absl::Now();
    return epoch;
  }

  const char* side_;
  bool enabled_;
  std::vector<std::pair<const char*, absl::Time>> marks_;
  std::vector<std::pair<std::string, CudaEvent>> gpu_marks_;
};

}  // namespace tandem
