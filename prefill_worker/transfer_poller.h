// A thread that watches the KV sender's transfers and reports each final status once, to
// the callback given with it (off the engine thread and off gRPC's threads).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "kv_transfer/kv_transfer.h"

namespace tandem {

class TransferPoller {
 public:
  using Done = std::function<void(absl::Status)>;

  explicit TransferPoller(KvSender& sender);
  ~TransferPoller();  // Stop()
  // Calls `done` with the transfer's final status once the sender reports it. Any thread.
  void Watch(uint64_t transfer_id, Done done);
  // Stops watching; transfers still in flight are not reported. Idempotent.
  void Stop();

 private:
  void Loop();

  KvSender& sender_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::map<uint64_t, Done> watched_;  // guarded by mu_
  bool stopping_ = false;             // guarded by mu_
  std::thread thread_;
};

}  // namespace tandem
