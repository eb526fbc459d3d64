// What the prefill worker's RPC reactions, its calls and its transfer poller share. Plain
// references into objects the PrefillWorker owns and outlives them with.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/engine/engine.h"
#include "kv_transfer/kv_transfer.h"
#include "prefill_worker/transfer_poller.h"
#include "tandem/internal/v1/worker.pb.h"

namespace tandem {

class PrefillCall;

class PrefillContext {
 public:
  PrefillContext(Engine& engine, KvSender& sender, TransferPoller& poller, bool kv_overlap)
      : engine(engine), sender(sender), poller(poller), kv_overlap(kv_overlap) {}

  Engine& engine;
  KvSender& sender;
  TransferPoller& poller;
  const bool kv_overlap;  // start sending at the hand-off, not after the first token
  std::atomic<bool> draining{false};

  internal::v1::WorkerIdentity identity() const;
  void set_identity(internal::v1::WorkerIdentity identity);

  // Live calls by engine id (the reservation id), for Abort and drain.
  absl::Status AddCall(const std::string& id, std::shared_ptr<PrefillCall> call);
  void RemoveCall(const std::string& id);
  std::vector<std::shared_ptr<PrefillCall>> CallsMatching(const std::string& request_id,
                                                          const std::string& reservation_id);
  size_t num_calls() const;

 private:
  mutable std::mutex mu_;
  internal::v1::WorkerIdentity identity_;                     // guarded by mu_
  std::map<std::string, std::shared_ptr<PrefillCall>> calls_;  // guarded by mu_
};

}  // namespace tandem
