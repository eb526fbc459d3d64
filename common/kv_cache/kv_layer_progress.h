// How far one forward pass has written its K/V, layer by layer: the runner publishes, a KV
// sender waits, so a prefill worker can stream a request's KV to its decode worker while
// the forward pass that computes it is still running (docs/kv_transfer.md, "Overlap").
//
// One object per forward pass (the engine makes it; every request handed off in that step
// shares it). Backend-neutral: a GPU runner publishes each layer with a device event
// recorded after that layer's K/V write (the sender orders its reads after the event on
// its own stream); a host runner publishes with no event (the write is already done).
// Thread-safe: the runner publishes on the engine thread, senders wait on theirs.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tandem {

class KvLayerProgress {
 public:
  explicit KvLayerProgress(int64_t num_layers) : events_(num_layers, nullptr) {}

  int64_t num_layers() const { return static_cast<int64_t>(events_.size()); }

  // Runner: layer `layer`'s K/V writes of this pass are issued, in order (layer 0 first).
  // `device_event` (a cudaEvent_t on the CUDA backend) completes once they are done; it
  // must stay valid (it may be re-recorded by a later pass: waiting then waits longer, never
  // less) for the runner's lifetime. nullptr: the writes are complete already.
  void LayerWritten(int64_t layer, void* device_event);
  // Engine: the pass returned; every layer is written and visible (the runner synchronized).
  void Complete();
  // Engine: the pass failed; layers not published will never be. Waiters get `status`.
  void Fail(absl::Status status);

  // Sender: blocks until layers [0, n) are published, then returns the event to wait on
  // for the last of them (nullptr: nothing to wait on). The pass's failure status if it
  // failed before publishing them; DEADLINE_EXCEEDED at `deadline`.
  absl::StatusOr<void*> WaitForLayers(int64_t n, absl::Time deadline);
  // Sender without device access (host reads of device-written KV): until Complete, the
  // pass's failure, or DEADLINE_EXCEEDED.
  absl::Status WaitForComplete(absl::Time deadline);
  // Host-readable layers: WaitForLayers, then WaitForComplete if the layer has a device
  // event (only the runner's synchronization makes device writes visible to the host).
  absl::Status WaitForHostLayers(int64_t n, absl::Time deadline);

 private:
  // With `lock` held: OK once `ready()`, else the pass's failure, else DEADLINE_EXCEEDED
  // saying `waiting_for()`.
  absl::Status WaitUntil(std::unique_lock<std::mutex>& lock, absl::Time deadline,
                         const std::function<bool()>& ready,
                         const std::function<std::string()>& waiting_for);

  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<void*> events_;  // guarded by mu_
  int64_t published_ = 0;      // guarded by mu_: layers [0, published_) written
  bool complete_ = false;      // guarded by mu_
  absl::Status failed_;        // guarded by mu_
};

}  // namespace tandem
