// The decode side of the TCP KV transport: accepts connections from prefill workers,
// checks each peer's handshake (model + KvLayout fingerprint, this receiver's incarnation),
// and writes arriving chunks into the blocks of expected reservations.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"
#include "kv_transfer/tcp/connection_server.h"
#include "kv_transfer/tcp/socket.h"

namespace tandem {

struct TcpKvReceiverOptions {
  std::string listen_host = "127.0.0.1";
  int port = 0;                   // 0 picks a free port
  std::string advertise_host;     // host in endpoint(); defaults to listen_host
  KvPeerIdentity identity;        // this worker
  absl::Duration frame_timeout = absl::Seconds(30);  // a started frame must finish by then
};

class TcpKvReceiver final : public KvReceiver {
 public:
  static absl::StatusOr<std::unique_ptr<TcpKvReceiver>> Start(KvCacheView cache,
                                                              TcpKvReceiverOptions options);
  ~TcpKvReceiver() override;

  std::string endpoint() const override { return endpoint_; }
  void Expect(const std::string& reservation_id, std::vector<int32_t> block_ids,
              absl::Time deadline) override;
  std::vector<KvArrival> PollArrivals() override;
  std::vector<KvArrival> WaitForArrivals(absl::Duration timeout) override;
  void Cancel(const std::string& reservation_id) override;

 private:
  struct Pending {
    std::vector<int32_t> block_ids;
    absl::Time deadline;
    int64_t blocks_received = 0;  // summed over layers
  };

  TcpKvReceiver(KvCacheView cache, TcpKvReceiverOptions options, tcp::Socket listener,
                int port);
  void Serve(tcp::Socket& socket);
  absl::Status Handshake(tcp::Socket& socket);
  void OnChunk(const internal::v1::KvChunk& chunk);
  void OnComplete(const internal::v1::KvComplete& complete);
  void Fail(const std::string& reservation_id, absl::Status status);  // requires mu_
  void ExpireLeases(absl::Time now);                                  // requires mu_

  const KvCacheView cache_;
  const TcpKvReceiverOptions options_;
  std::string endpoint_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::map<std::string, Pending> pending_;  // guarded by mu_
  std::vector<KvArrival> arrivals_;         // guarded by mu_
  std::condition_variable arrived_;         // signalled when arrivals_ grows
  std::unique_ptr<tcp::ConnectionServer> server_;  // last: stopped before the rest goes
};

}  // namespace tandem
