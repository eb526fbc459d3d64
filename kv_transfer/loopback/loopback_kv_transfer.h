// In-process KV transport for tests: a sender copies blocks straight into a receiver found
// by endpoint in a LoopbackKvNetwork that the test owns. Same contracts as TCP (deadlines,
// cancel, late frames dropped), no sockets.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "kv_transfer/kv_transfer.h"

namespace tandem {

class LoopbackKvReceiver;

// Endpoint -> receiver. Receivers register on construction and leave on destruction.
class LoopbackKvNetwork {
 public:
  LoopbackKvReceiver* Find(const std::string& endpoint);

 private:
  friend class LoopbackKvReceiver;
  std::mutex mu_;
  std::map<std::string, LoopbackKvReceiver*> receivers_;  // guarded by mu_
  int next_port_ = 1;                                     // guarded by mu_
};

class LoopbackKvReceiver final : public KvReceiver {
 public:
  LoopbackKvReceiver(KvCacheView cache, LoopbackKvNetwork& network);
  ~LoopbackKvReceiver() override;

  std::string endpoint() const override { return endpoint_; }
  void Expect(const std::string& reservation_id, std::vector<int32_t> block_ids,
              absl::Time deadline) override;
  std::vector<KvArrival> PollArrivals() override;
  void Cancel(const std::string& reservation_id) override;

  // Called by LoopbackKvSender: copies every layer of `src_blocks` from `source`.
  absl::Status Deliver(const KvCacheView& source, const KvSendRequest& request);

 private:
  struct Pending {
    std::vector<int32_t> block_ids;
    absl::Time deadline;
  };
  const KvCacheView cache_;
  LoopbackKvNetwork& network_;
  std::string endpoint_;
  std::mutex mu_;
  std::map<std::string, Pending> pending_;  // guarded by mu_
  std::vector<KvArrival> arrivals_;         // guarded by mu_
};

class LoopbackKvSender final : public KvSender {
 public:
  LoopbackKvSender(KvCacheView cache, LoopbackKvNetwork& network)
      : cache_(std::move(cache)), network_(network) {}

  // Transfers complete inside StartSend, or inside SetFirstToken when it was pending.
  uint64_t StartSend(KvSendRequest request) override;
  std::optional<absl::Status> Poll(uint64_t transfer_id) override;
  void Cancel(uint64_t transfer_id) override;
  void SetFirstToken(uint64_t transfer_id, KvFirstToken token) override;

 private:
  absl::Status Deliver(const KvSendRequest& request);  // requires mu_

  const KvCacheView cache_;
  LoopbackKvNetwork& network_;
  std::mutex mu_;
  std::map<uint64_t, KvSendRequest> waiting_;  // guarded by mu_: first token pending
  std::map<uint64_t, absl::Status> done_;      // guarded by mu_
  uint64_t next_id_ = 1;                       // guarded by mu_
};

}  // namespace tandem
