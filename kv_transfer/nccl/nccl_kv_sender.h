// The prefill side of the NCCL KV transport (KV in CUDA device memory).
//
// One I/O thread sends queued transfers in order. Per receiver endpoint it keeps a control
// connection (control_channel.h) and a 2-rank communicator (this sender rank 0, the
// receiver rank 1), created lazily on the first transfer to that endpoint from a unique id
// sent in the handshake, and kept in a pool of at most `max_communicators` (least recently
// used evicted). A transfer sends its header on the control connection, then cuts the
// request's (layer, block) units into chunks of at most `max_chunk_bytes` that span layers
// (kv_chunk_plan.h): per chunk, one gather kernel packs its K and V blocks into a staging
// slot (ring of `num_staging_slots`, on its own stream) and one ncclSend ships it (on the
// communicator's stream) while the next chunk is gathered. Chunks are graded: short first
// and last ones (`edge_chunk_bytes`), large ones between; a 2k-token Llama-3-8B request
// (256 MiB) is 4 messages (16 + 112 + 112 + 16 MiB), not 32 per-layer ones, sent on a
// blocking child communicator (calls cost microseconds, not a thread start each). After the
// chunks a trailer on the control connection carries the outcome and the first token. The
// transfer is done when the last send completes; the thread polls that with the request's
// deadline, the communicator's asynchronous error and the control connection (a closed one:
// the receiver died). A failure that leaves the pair mid-message aborts the communicator
// (ncclCommAbort) and drops the pair; the next transfer builds a new one.
//
// Overlap (KvSendRequest::progress): a chunk is enqueued once the forward pass published
// every layer it covers, its gather ordered after that layer's event on our stream, so the
// KV streams while the pass runs; with first_token_pending the trailer waits for
// SetFirstToken. A pass that fails still gets all its chunks sent (stale bytes) and a
// failing trailer, so the pair stays in step.
//
// Once its header is sent a transfer runs to its end (the forward pass's remaining layers,
// then a few milliseconds at most): Cancel stops a transfer that has not started; one in
// flight sends everything and a CANCELLED trailer, and reports CANCELLED.
#pragma once

#include <array>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/cuda/cuda_handles.h"
#include "kv_transfer/kv_transfer.h"
#include "kv_transfer/send_queue.h"
#include "kv_transfer/nccl/control_channel.h"
#include "kv_transfer/nccl/kv_chunk_plan.h"
#include "kv_transfer/nccl/nccl_comm.h"
#include "kv_transfer/nccl/transfer_trace.h"
#include "kv_transfer/tcp/socket.h"

namespace tandem {

struct NcclKvSenderOptions {
  KvPeerIdentity identity;               // this worker
  // K+V bytes per NCCL message (units of any layers) and the staging ring: 2 x 128 MiB was
  // the fastest of {32,64,128} MiB x {2,3} slots at 2k and 8k tokens (docs/kv_transfer.md).
  size_t max_chunk_bytes = 128u << 20;
  // Graded chunks (kv_chunk_plan.h): the first and the last chunk of a request carry this
  // many bytes (rounded down to whole units), so the wire starts after a short gather and
  // the final, unoverlapped scatter is short; the middle chunks are balanced, each at most
  // max_chunk_bytes. 0, or max_chunk_bytes and above: uniform chunks.
  size_t edge_chunk_bytes = 16u << 20;
  // Graded plans: edge chunks grow by this factor toward the middle (kv_chunk_plan.h,
  // "Ramped"); 1: one edge chunk per side.
  int64_t edge_ramp = 1;
  int num_staging_slots = 2;             // gather runs this many chunks ahead of the sends
  // CTAs a gather that runs beside the wire may use (0: as many as its blocks need): the
  // gather of chunk i+1 runs beside the NCCL kernel sending chunk i and, uncapped, takes
  // every SM and most of the HBM bandwidth from it. The first gather, which nothing
  // overlaps, is never capped. 64 (each CTA copying a whole unit at a time): 8k tokens
  // +3-4%, 512 and 2k within noise of uncapped (docs/kv_transfer.md, "Session 5").
  int32_t pack_max_ctas = 64;
  size_t max_communicators = 8;          // receivers with a live communicator at once
  absl::Duration connect_timeout = absl::Seconds(20);  // TCP connect + communicator init
  // KV messages on a blocking child communicator (NcclComm::SplitBlocking) split from the
  // pair's non-blocking one after a connecting message: each NCCL call then costs
  // microseconds instead of the non-blocking communicator's thread start (~100+ us), which
  // graded chunks need (more, smaller messages). Init, connection and split keep their
  // deadlines; the receiver follows the sender's choice.
  bool blocking_communicator = true;
  // Staging (always from ncclMemAlloc) registered with each pair's KV communicator, and the
  // receiver's with its own (it follows the sender's choice): NCCL then writes the sender's
  // staging straight into the receiver's instead of through its FIFO, so the receiving GPU's
  // HBM carries the KV once instead of three times beside the scatter. Measured +8-10% at
  // 2k tokens; off by default because one of four runs on fresh machines lost a process
  // silently around a pair's teardown (docs/kv_transfer.md, "Registered staging").
  bool register_staging = false;
  // Direct writes: both sides' staging is registered as a symmetric NCCL window and the
  // gathers write straight into the receiver's staging through the peer mapping NCCL made
  // (NVLink stores from our copy kernel), announcing each landed chunk on the control
  // connection; the receiver answers when a reused slot is free. No NCCL message, no
  // rendezvous, no FIFO: the wire starts with the first gather and ends with the last.
  // Needs a receiver with >= 2 staging slots no larger in all than our staging; otherwise,
  // or when NCCL cannot register the window, the pair uses NCCL send/receive.
  bool direct_write = true;
  // Tests: called on the I/O thread before chunk `index` of every transfer is enqueued.
  std::function<void(int64_t index)> before_chunk_for_test;
};

class NcclKvSender final : public KvSender {
 public:
  // `cache` must be a KvMemory::kCudaDevice view. Allocates the staging ring and streams.
  static absl::StatusOr<std::unique_ptr<NcclKvSender>> Create(KvCacheView cache,
                                                              NcclKvSenderOptions options);
  ~NcclKvSender() override;

  uint64_t StartSend(KvSendRequest request) override;
  std::optional<absl::Status> Poll(uint64_t transfer_id) override;
  void Cancel(uint64_t transfer_id) override;
  void SetFirstToken(uint64_t transfer_id, KvFirstToken token) override;
  void WaitForProgress(absl::Duration timeout) override;

 private:
  struct Peer {
    tcp::Socket socket;
    NcclComm comm;  // non-blocking: init, connect, split
    NcclComm data;  // blocking_communicator: the split child carrying KV (aborted first)
    const NcclComm& kv() const { return data.valid() ? data : comm; }
    uint64_t receiver_incarnation = 0;
    uint64_t next_sequence = 0;
    int32_t units_per_chunk = 0;  // min(ours, the receiver's slot)
    uint64_t last_used = 0;
    // Direct writes: the receiver's staging ring as mapped into this process.
    std::byte* peer_staging = nullptr;
    size_t peer_slot_bytes = 0;
    int64_t peer_slots = 0;
    // Chunks written into its staging whose SlotFree notice has not been read, in order;
    // across transfers (a slot is written again only once its last chunk was scattered).
    std::deque<nccl_control::ChunkNotice> unfreed;
    bool direct() const { return peer_staging != nullptr; }
  };

  NcclKvSender(KvCacheView cache, NcclKvSenderOptions options);
  absl::Status Init();
  void Loop();
  // `in_step` false: the pair may be mid-message (abort and rebuild it).
  absl::Status Send(uint64_t id, const KvSendRequest& request, bool& in_step);
  absl::StatusOr<Peer*> Connected(const KvSendRequest& request);
  // Enqueues every chunk (after the layers it covers, with request.progress). A failed
  // forward pass goes to `forward_failed` and the chunks still go; an error return means
  // the pair is out of step.
  absl::Status SendChunks(Peer& peer, const KvChunkPlan& plan, const KvSendRequest& request,
                          TransferTrace& trace, absl::Status& forward_failed);
  // Launches chunk `index`'s gather into `staging` (ours, or the receiver's when
  // `remote_staging`) on the gather stream and records `gathered` after it.
  void Gather(const KvChunkPlan& plan, int64_t index, std::byte* staging, int32_t max_ctas,
              bool remote_staging, const CudaEvent& gathered, TransferTrace& trace);
  // Overlap: waits (host, bounded) until the forward pass published every layer `chunk`
  // covers and orders the gather stream after that layer's event. A failed pass goes to
  // `forward_failed` (the chunks still go); an error return is a deadline.
  absl::Status AwaitLayers(const KvChunkPlan& plan, const KvChunk& chunk,
                           const KvSendRequest& request, int64_t index, int64_t& layers_ready,
                           absl::Status& forward_failed, TransferTrace& trace);
  // The same with direct writes: gathers into the receiver's staging, a ChunkLanded notice
  // after each, and before a slot is written the SlotFree notice of the chunk (this
  // transfer's or an earlier one's) that last used it.
  absl::Status SendChunksDirect(Peer& peer, const KvChunkPlan& plan, const KvSendRequest& request,
                                uint64_t sequence, TransferTrace& trace,
                                absl::Status& forward_failed);
  // Direct writes: registers the window on the pair's communicator and finds the peer's
  // staging in it.
  absl::Status SetUpDirectWrite(Peer& peer, const nccl_control::HelloAck& ack,
                                absl::Time deadline);
  // For polled waits during a transfer: the receiver's connection closed or the
  // communicator failed. `peer` must outlive the check.
  static WaitCheck ReceiverAlive(const Peer& peer);
  // Waits (bounded) for the last enqueued send.
  absl::Status WaitSent(Peer& peer, absl::Time deadline);
  // Waits (bounded) until no kernel of ours reads the cache or the staging ring.
  void DrainStreams();
  bool Cancelled(uint64_t id) { return jobs_.Cancelled(id); }

  const KvCacheView cache_;
  const NcclKvSenderOptions options_;
  size_t slot_bytes_ = 0;
  // Owned by the I/O thread after Init.
  CudaStream gather_stream_, nccl_stream_;
  NcclMemory staging_;  // from ncclMemAlloc with register_staging
  DeviceBuffer block_ids_, layer_ptrs_;  // layer_ptrs_: [K layers][V layers]
  PinnedBuffer block_ids_host_;
  std::vector<CudaEvent> gathered_, sent_;
  std::array<CudaEvent, 2> landed_;  // direct writes: the last two chunks' gathers
  CudaEvent done_, gather_done_;
  std::map<std::string, Peer> peers_;
  bool direct_write_failed_ = false;  // a window could not be set up: send/receive only
  uint64_t use_clock_ = 0;

  KvSendQueue jobs_;
  std::thread thread_;
};

}  // namespace tandem
