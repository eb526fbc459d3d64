// The decode side of the NCCL KV transport (KV in CUDA device memory).
//
// Listens for control connections (control_channel.h) from prefill workers, checks each
// handshake (model + KvLayout fingerprint, layout, this receiver's incarnation, the bound on
// senders), joins the pair's communicator as rank 1 and then serves transfers on that
// connection's own thread, streams and staging ring: for each header it checks the pair's
// sequence number, posts ncclRecv for the first `num_staging_slots` chunks (kv_chunk_plan.h:
// runs of (layer, block) units spanning layers), and as each chunk lands launches one
// scatter kernel into the reservation's blocks and posts the receive that reuses the slot.
// Then it reads the transfer's trailer: the first token, or the sender's failure (its
// prefill failed or was cancelled after the KV started streaming), which fails only that
// reservation (the pair stays in step). Every chunk must land within `recv_timeout` (the deadline on every receive); a timeout, a
// communicator error or a closed connection fails the reservation being received with
// DEADLINE_EXCEEDED or UNAVAILABLE — reported first, since nothing after it may block the
// bookkeeping — then aborts the communicator (ncclCommAbort) and closes the connection; the
// sender rebuilds on its next transfer. No wait here is a blocking CUDA synchronize: events
// are polled with a deadline, so a kernel stuck on a frozen peer never holds this thread.
//
// Cancel and lease semantics are the TCP receiver's: chunks for cancelled, expired or
// unknown reservations are received into staging and dropped (the pair stays in step); the
// scatter is launched under the lock only while the reservation is expected, and Cancel
// waits for scatters already launched, so no byte of a cancelled reservation is written
// after Cancel returns.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/cuda/cuda_handles.h"
#include "kv_transfer/kv_transfer.h"
#include "kv_transfer/nccl/control_channel.h"
#include "kv_transfer/nccl/kv_chunk_plan.h"
#include "kv_transfer/nccl/nccl_comm.h"
#include "kv_transfer/nccl/transfer_trace.h"
#include "kv_transfer/tcp/connection_server.h"
#include "kv_transfer/tcp/socket.h"

namespace tandem {

struct NcclKvReceiverOptions {
  std::string listen_host = "127.0.0.1";
  int port = 0;                     // 0 picks a free port
  std::string advertise_host;       // host in endpoint(); defaults to listen_host
  KvPeerIdentity identity;          // this worker
  // Staging slot per connection (senders chunk to fit): slots x this of device memory per
  // sender connected.
  size_t max_chunk_bytes = 128u << 20;
  int num_staging_slots = 2;
  // CTAs a scatter that runs beside the wire may use (0: as many as it needs); the last
  // scatter, which nothing overlaps, is never capped. As NcclKvSenderOptions::pack_max_ctas.
  int32_t pack_max_ctas = 64;
  int max_senders = 8;              // connections (communicators) at once; more are refused
  absl::Duration recv_timeout = absl::Seconds(10);  // each chunk, once its header arrived
  absl::Duration init_timeout = absl::Seconds(20);  // handshake + communicator init
};

class NcclKvReceiver final : public KvReceiver {
 public:
  // `cache` must be a KvMemory::kCudaDevice view.
  static absl::StatusOr<std::unique_ptr<NcclKvReceiver>> Start(KvCacheView cache,
                                                               NcclKvReceiverOptions options);
  ~NcclKvReceiver() override;

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
    uint64_t generation = 0;
    // A connection's scatter streams while it writes.
    std::array<cudaStream_t, 2> writing_streams{};
  };
  class Session;  // one connection's communicator, streams, staging ring

  NcclKvReceiver(KvCacheView cache, NcclKvReceiverOptions options, tcp::Socket listener, int port);
  void Serve(tcp::Socket& socket);
  absl::StatusOr<std::unique_ptr<Session>> Handshake(tcp::Socket& socket);
  absl::Status Receive(Session& session, tcp::Socket& socket,
                       const nccl_control::TransferHeader& header);
  // Marks the header's reservation as being written by `session` and uploads its block
  // ids; returns its generation, or 0 when the chunks are only to be drained (unknown,
  // cancelled, or too small: that failure is reported here).
  uint64_t Claim(Session& session, const nccl_control::TransferHeader& header);
  // Posts the first receives, then claims the header's reservation (`generation`, set even
  // when this fails), then receives and scatters every chunk.
  absl::Status ReceiveChunks(Session& session, tcp::Socket& socket, const KvChunkPlan& plan,
                             const nccl_control::TransferHeader& header, uint64_t& generation,
                             TransferTrace& trace);
  // The same for a direct-write pair: claims the reservation, then per chunk waits for the
  // sender's ChunkLanded notice, scatters, and answers SlotFree when the slot is reused.
  absl::Status ReceiveChunksDirect(Session& session, tcp::Socket& socket,
                                   const KvChunkPlan& plan,
                                   const nccl_control::TransferHeader& header,
                                   uint64_t& generation, TransferTrace& trace);
  // Launches chunk `c`'s scatter from its staging slot into the reservation's blocks while
  // the reservation is still the one claimed (`generation`), and records the slot's
  // `scattered` event either way.
  void Scatter(Session& session, const KvChunkPlan& plan,
               const nccl_control::TransferHeader& header, uint64_t generation, int64_t c,
               TransferTrace& trace);
  // The arrival, if the reservation is still the one claimed (same generation).
  void Report(KvArrival arrival, uint64_t generation);
  bool StillWriting(const std::string& reservation_id, uint64_t generation);  // requires mu_
  // Forgets a pending reservation; waits for scatters it has in flight. Requires mu_.
  void Forget(std::map<std::string, Pending>::iterator it);
  void ExpireLeases(absl::Time now);  // requires mu_

  const KvCacheView cache_;
  const NcclKvReceiverOptions options_;
  std::string endpoint_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> sessions_{0};
  std::mutex mu_;
  std::map<std::string, Pending> pending_;  // guarded by mu_
  std::vector<KvArrival> arrivals_;         // guarded by mu_
  uint64_t next_generation_ = 1;            // guarded by mu_
  std::condition_variable arrived_;
  std::unique_ptr<tcp::ConnectionServer> server_;  // last: stopped before the rest goes
};

}  // namespace tandem
