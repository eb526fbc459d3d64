// The prefill side of the TCP KV transport. One I/O thread sends queued transfers in order
// over one cached connection per receiver endpoint, layer by layer (each once the forward
// pass wrote it, with KvSendRequest::progress), in chunks of whole blocks, then a
// KvComplete carrying the first token (waiting for SetFirstToken when it is pending). A connection is re-handshaken when a
// transfer expects a different receiver incarnation, and dropped on any error.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "kv_transfer/kv_transfer.h"
#include "kv_transfer/send_queue.h"
#include "kv_transfer/tcp/socket.h"

namespace tandem {

struct TcpKvSenderOptions {
  KvPeerIdentity identity;                  // this worker
  size_t max_chunk_bytes = 4u << 20;        // K+V bytes per frame (at least one block)
  absl::Duration connect_timeout = absl::Seconds(5);
};

class TcpKvSender final : public KvSender {
 public:
  TcpKvSender(KvCacheView cache, TcpKvSenderOptions options);
  ~TcpKvSender() override;

  uint64_t StartSend(KvSendRequest request) override;
  std::optional<absl::Status> Poll(uint64_t transfer_id) override;
  void Cancel(uint64_t transfer_id) override;
  void SetFirstToken(uint64_t transfer_id, KvFirstToken token) override;
  void WaitForProgress(absl::Duration timeout) override;

 private:
  struct Peer {
    tcp::Socket socket;
    uint64_t receiver_incarnation = 0;
  };

  void Loop();
  absl::Status Send(uint64_t id, const KvSendRequest& request);
  absl::StatusOr<Peer*> Connected(const KvSendRequest& request);
  absl::Status SendLayer(uint64_t id, const KvSendRequest& request, Peer& peer, int64_t layer,
                         uint64_t& sequence);
  bool Cancelled(uint64_t id) { return jobs_.Cancelled(id); }

  const KvCacheView cache_;
  const TcpKvSenderOptions options_;
  std::map<std::string, Peer> peers_;  // only the I/O thread touches this
  KvSendQueue jobs_;
  std::thread thread_;
};

}  // namespace tandem
