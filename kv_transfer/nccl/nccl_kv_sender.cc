#include "kv_transfer/nccl/nccl_kv_sender.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/logging.h"
#include "common/status.h"
#include "kv_transfer/nccl/control_channel.h"
#include "kv_transfer/nccl/kv_pack_kernels.h"
#include "kv_transfer/nccl/transfer_trace.h"

namespace tandem {
namespace {

constexpr size_t kConnectBytes = 16;  // the message that connects a pair before a split

// Restores the calling thread's current CUDA device on scope exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous_);
    cudaSetDevice(device);
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<NcclKvSender>> NcclKvSender::Create(KvCacheView cache,
                                                                   NcclKvSenderOptions options) {
  TANDEM_RETURN_IF_ERROR(cache.layout.Validate());
  if (cache.memory != KvMemory::kCudaDevice || cache.cuda_device < 0) {
    return absl::InvalidArgumentError("NcclKvSender needs a KV cache in CUDA device memory");
  }
  if (options.num_staging_slots < 1) {
    return absl::InvalidArgumentError("num_staging_slots must be at least 1");
  }
  std::unique_ptr<NcclKvSender> sender(new NcclKvSender(std::move(cache), std::move(options)));
  TANDEM_RETURN_IF_ERROR(sender->Init());
  sender->thread_ = std::thread([s = sender.get()] { s->Loop(); });
  return sender;
}

NcclKvSender::NcclKvSender(KvCacheView cache, NcclKvSenderOptions options)
    : cache_(std::move(cache)), options_(std::move(options)) {}

absl::Status NcclKvSender::Init() {
  DisableNcclMulticastUnlessSet();
  DeviceGuard guard(cache_.cuda_device);
  const KvLayout& layout = cache_.layout;
  const size_t unit_bytes = 2 * layout.BytesPerBlockPerLayer();
  slot_bytes_ = static_cast<size_t>(UnitsPerChunk(options_.max_chunk_bytes, unit_bytes,
                                                  cache_.num_blocks, layout.num_layers)) *
                unit_bytes;
  TANDEM_RETURN_IF_ERROR(
      ValidateKvLayerPointers(cache_.k, cache_.v, layout.BytesPerBlockPerLayer()));
  if (static_cast<int64_t>(cache_.k.size()) != layout.num_layers) {
    return absl::InvalidArgumentError("kv cache view has a K/V pointer count != num_layers");
  }
  TANDEM_RETURN_IF_ERROR(PreloadKvPackKernels());
  // Priorities: NCCL's kernel starts before pending gather blocks (a 112 MiB gather is
  // thousands of blocks), and both before a running forward pass's (overlap).
  TANDEM_ASSIGN_OR_RETURN(gather_stream_, CudaStream::CreateWithPriority(1));
  TANDEM_ASSIGN_OR_RETURN(nccl_stream_, CudaStream::CreateWithPriority(5));
  TANDEM_ASSIGN_OR_RETURN(staging_, NcclMemory::Allocate(
                                         slot_bytes_ * options_.num_staging_slots,
                                         options_.register_staging || options_.direct_write));
  size_t ids_bytes = sizeof(int32_t) * static_cast<size_t>(std::max<int64_t>(1, cache_.num_blocks));
  TANDEM_ASSIGN_OR_RETURN(block_ids_, DeviceBuffer::Allocate(ids_bytes));
  TANDEM_ASSIGN_OR_RETURN(block_ids_host_, PinnedBuffer::Allocate(ids_bytes));
  std::vector<std::byte*> layer_ptrs = cache_.k;
  layer_ptrs.insert(layer_ptrs.end(), cache_.v.begin(), cache_.v.end());
  TANDEM_ASSIGN_OR_RETURN(layer_ptrs_, DeviceBuffer::Allocate(sizeof(std::byte*) * layer_ptrs.size()));
  TANDEM_CUDA_CHECK(cudaMemcpy(layer_ptrs_.data(), layer_ptrs.data(),
                               sizeof(std::byte*) * layer_ptrs.size(), cudaMemcpyHostToDevice));
  for (int s = 0; s < options_.num_staging_slots; ++s) {
    TANDEM_ASSIGN_OR_RETURN(CudaEvent gathered, CudaEvent::Create());
    TANDEM_ASSIGN_OR_RETURN(CudaEvent sent, CudaEvent::Create());
    gathered_.push_back(std::move(gathered));
    sent_.push_back(std::move(sent));
  }
  for (CudaEvent& event : landed_) {
    TANDEM_ASSIGN_OR_RETURN(event, CudaEvent::Create());
  }
  TANDEM_ASSIGN_OR_RETURN(done_, CudaEvent::Create());
  TANDEM_ASSIGN_OR_RETURN(gather_done_, CudaEvent::Create());
  return absl::OkStatus();
}

NcclKvSender::~NcclKvSender() {
  jobs_.Stop();
  if (thread_.joinable()) thread_.join();
  DeviceGuard guard(cache_.cuda_device);
  peers_.clear();  // aborts the communicators
}

uint64_t NcclKvSender::StartSend(KvSendRequest request) { return jobs_.Push(std::move(request)); }

std::optional<absl::Status> NcclKvSender::Poll(uint64_t transfer_id) {
  return jobs_.Poll(transfer_id);
}

void NcclKvSender::Cancel(uint64_t transfer_id) { jobs_.Cancel(transfer_id); }

void NcclKvSender::SetFirstToken(uint64_t transfer_id, KvFirstToken token) {
  jobs_.SetFirstToken(transfer_id, token);
}

void NcclKvSender::WaitForProgress(absl::Duration timeout) { jobs_.WaitForFinish(timeout); }

void NcclKvSender::Loop() {
  TANDEM_CUDA_CHECK(cudaSetDevice(cache_.cuda_device));
  while (std::optional<KvSendQueue::Job> job = jobs_.Next()) {
    bool in_step = true;
    absl::Status status = Send(job->first, job->second, in_step);
    if (!in_step) {
      TANDEM_LOG(WARNING) << "kv sender: transfer of " << job->second.reservation_id << " to "
                          << job->second.endpoint << " failed (" << status
                          << "); aborting the communicator";
      // The pair may be mid-message: abort the communicator (stops our kernels), wait until
      // nothing reads the source blocks any more, and rebuild on the next transfer. Direct
      // writes: our gathers (which wait for nothing of the peer's) finish first, as the
      // abort unmaps the peer's staging they write to.
      auto peer = peers_.find(job->second.endpoint);
      if (peer != peers_.end() && peer->second.direct()) DrainStreams();
      peers_.erase(job->second.endpoint);
      DrainStreams();
    }
    if (status.ok() && jobs_.Cancelled(job->first)) {
      status = absl::CancelledError("kv transfer cancelled (after it was sent)");
    }
    jobs_.Finish(job->first, std::move(status));
  }
}

absl::StatusOr<NcclKvSender::Peer*> NcclKvSender::Connected(const KvSendRequest& request) {
  auto it = peers_.find(request.endpoint);
  if (it != peers_.end() && it->second.receiver_incarnation == request.receiver_incarnation &&
      !nccl_control::PeerClosed(it->second.socket) && it->second.kv().AsyncError().ok()) {
    it->second.last_used = ++use_clock_;
    return &it->second;
  }
  peers_.erase(request.endpoint);
  while (!peers_.empty() && peers_.size() >= options_.max_communicators) {
    auto lru = peers_.begin();
    for (auto p = peers_.begin(); p != peers_.end(); ++p) {
      if (p->second.last_used < lru->second.last_used) lru = p;
    }
    peers_.erase(lru);  // aborts its communicator; the receiver sees the connection close
  }
  absl::Time deadline = std::min(request.deadline, absl::Now() + options_.connect_timeout);
  TANDEM_ASSIGN_OR_RETURN(tcp::Socket socket, tcp::Connect(request.endpoint, deadline));
  nccl_control::Hello hello{.sender_name = options_.identity.name,
                            .sender_incarnation = options_.identity.incarnation,
                            .expected_receiver_incarnation = request.receiver_incarnation,
                            .model_fingerprint = options_.identity.model_fingerprint,
                            .layout = cache_.layout.Describe(),
                            .blocking_data_communicator = options_.blocking_communicator,
                            .gpu_uuid = GpuUuid(cache_.cuda_device),
                            .register_staging = options_.register_staging,
                            .direct_write = options_.direct_write && !direct_write_failed_,
                            .sender_staging_bytes = staging_.size_bytes()};
  TANDEM_ASSIGN_OR_RETURN(hello.unique_id, NcclComm::NewUniqueId());
  TANDEM_RETURN_IF_ERROR(nccl_control::Write(socket, hello, deadline));
  TANDEM_ASSIGN_OR_RETURN(nccl_control::HelloAck ack, nccl_control::ReadHelloAck(socket, deadline));
  if (!ack.accepted) {
    return absl::FailedPreconditionError(
        absl::StrCat("kv peer ", request.endpoint, " refused: ", ack.error));
  }
  const size_t unit_bytes = 2 * cache_.layout.BytesPerBlockPerLayer();
  int64_t units_per_chunk =
      static_cast<int64_t>(std::min<uint64_t>(ack.max_chunk_bytes, slot_bytes_) / unit_bytes);
  if (units_per_chunk < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "kv peer ", request.endpoint, " stages ", ack.max_chunk_bytes, " bytes per chunk, below one block"));
  }
  TANDEM_ASSIGN_OR_RETURN(NcclComm comm, NcclComm::Create(/*world_size=*/2, /*rank=*/0,
                                                          hello.unique_id, deadline));
  NcclComm data;
  if (options_.blocking_communicator) {
    // Connect the pair on the non-blocking communicator (bounded), then split the blocking
    // child that reuses the connection. Staging is idle: earlier transfers have finished.
    const WaitCheck receiver_alive = [&socket]() -> absl::Status {
      if (nccl_control::PeerClosed(socket)) return absl::UnavailableError("kv receiver closed");
      return absl::OkStatus();
    };
    TANDEM_RETURN_IF_ERROR(comm.Finish(ncclSend(staging_.data(), kConnectBytes, ncclUint8,
                                                /*peer=*/1, comm.get(), nccl_stream_.get()),
                                       "ncclSend (connect)", deadline, receiver_alive));
    done_.Record(nccl_stream_.get());
    TANDEM_RETURN_IF_ERROR(WaitForEvent(done_.get(), deadline, "kv pair connect", receiver_alive));
    TANDEM_ASSIGN_OR_RETURN(data, comm.SplitBlocking(deadline));
  }
  const bool direct = nccl_control::UseDirectWrite(hello.direct_write, ack.staging_bytes,
                                                   ack.max_chunk_bytes, staging_.size_bytes());
  if (options_.register_staging && !direct) {
    TANDEM_RETURN_IF_ERROR((data.valid() ? data : comm).Register(staging_.data(), staging_.size_bytes()));
  }
  Peer& peer = peers_[request.endpoint];
  peer.socket = std::move(socket);
  peer.comm = std::move(comm);
  peer.data = std::move(data);
  if (direct) {
    absl::Status set_up = SetUpDirectWrite(peer, ack, deadline);
    if (!set_up.ok()) {
      // NCCL could not map the window here: this sender uses NCCL send/receive from now on.
      // The receiver, in the same collective, drops the half-built pair when we abort it.
      TANDEM_LOG(WARNING) << "kv sender: direct writes to " << request.endpoint
                          << " unavailable (" << set_up << "); using NCCL send/receive";
      peers_.erase(request.endpoint);
      direct_write_failed_ = true;
      return Connected(request);
    }
  }
  peer.receiver_incarnation = request.receiver_incarnation;
  peer.units_per_chunk = static_cast<int32_t>(
      std::min<int64_t>(units_per_chunk, std::numeric_limits<int32_t>::max()));
  peer.last_used = ++use_clock_;
  return &peer;
}

absl::Status NcclKvSender::SetUpDirectWrite(Peer& peer, const nccl_control::HelloAck& ack,
                                            absl::Time deadline) {
  // The window is the receiver's ring size on both ranks (a prefix of our staging).
  TANDEM_ASSIGN_OR_RETURN(ncclWindow_t window,
                          peer.comm.RegisterWindow(staging_.data(), ack.staging_bytes, deadline,
                                                   ReceiverAlive(peer)));
  TANDEM_ASSIGN_OR_RETURN(DeviceBuffer pointer, DeviceBuffer::Allocate(sizeof(void*)));
  TANDEM_ASSIGN_OR_RETURN(PinnedBuffer host, PinnedBuffer::Allocate(sizeof(void*)));
  LaunchWindowPeerPointer(window, /*peer=*/1, static_cast<void**>(pointer.data()),
                          nccl_stream_.get());
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(host.data(), pointer.data(), sizeof(void*),
                                    cudaMemcpyDeviceToHost, nccl_stream_.get()));
  done_.Record(nccl_stream_.get());
  TANDEM_RETURN_IF_ERROR(WaitForEvent(done_.get(), deadline, "kv window peer pointer"));
  peer.peer_staging = *static_cast<std::byte**>(host.data());
  if (peer.peer_staging == nullptr) return absl::InternalError("kv window: no peer mapping");
  peer.peer_slot_bytes = ack.max_chunk_bytes;
  peer.peer_slots = static_cast<int64_t>(ack.staging_bytes / ack.max_chunk_bytes);
  return absl::OkStatus();
}

void NcclKvSender::DrainStreams() {
  // After ncclCommAbort our NCCL kernels have stopped, so both streams finish in bounded
  // time; the bound only keeps a wedged GPU from hanging the I/O thread silently.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  done_.Record(nccl_stream_.get());
  gather_done_.Record(gather_stream_.get());
  for (const CudaEvent* event : {&done_, &gather_done_}) {
    absl::Status drained = WaitForEvent(event->get(), deadline, "kv sender drain after abort");
    if (!drained.ok()) TANDEM_LOG(ERROR) << "kv sender: " << drained;
  }
}

WaitCheck NcclKvSender::ReceiverAlive(const Peer& peer) {
  // The receiver died: its control connection closed (checked while NCCL calls are polled).
  return [&peer]() -> absl::Status {
    if (nccl_control::PeerClosed(peer.socket)) {
      return absl::UnavailableError("kv receiver closed its connection mid-transfer (died?)");
    }
    return peer.kv().AsyncError();
  };
}

absl::Status NcclKvSender::AwaitLayers(const KvChunkPlan& plan, const KvChunk& chunk,
                                       const KvSendRequest& request, int64_t index,
                                       int64_t& layers_ready, absl::Status& forward_failed,
                                       TransferTrace& trace) {
  const int64_t needed = (chunk.first_unit + chunk.num_units - 1) / plan.num_blocks + 1;
  if (needed <= layers_ready || !forward_failed.ok()) return absl::OkStatus();
  absl::StatusOr<void*> written = request.progress->WaitForLayers(needed, request.deadline);
  if (absl::IsDeadlineExceeded(written.status())) return written.status();
  if (written.ok()) {
    if (*written != nullptr) {
      TANDEM_CUDA_CHECK(cudaStreamWaitEvent(gather_stream_.get(),
                                            static_cast<cudaEvent_t>(*written), 0));
    }
    layers_ready = needed;
    if (index == 0) trace.Mark("first_layers");
  } else {
    // The pass failed: the remaining chunks still go (stale bytes), so the receiver's
    // receives complete and the pair stays in step; the trailer carries the failure.
    forward_failed = written.status();
  }
  return absl::OkStatus();
}

void NcclKvSender::Gather(const KvChunkPlan& plan, int64_t index, std::byte* staging,
                          int32_t max_ctas, bool remote_staging, const CudaEvent& gathered,
                          TransferTrace& trace) {
  std::byte* const* layers = layer_ptrs_.as<std::byte* const>();
  const KvChunk chunk = plan.chunk(index);
  if (index == 0) trace.MarkGpu("g_base", -1, gather_stream_.get());
  trace.MarkGpu("g", index, gather_stream_.get());
  LaunchKvGather({.k_layers = layers, .v_layers = layers + cache_.layout.num_layers,
                  .block_ids = block_ids_.as<int32_t>(),
                  .num_blocks = static_cast<int32_t>(plan.num_blocks),
                  .first_unit = chunk.first_unit, .count = chunk.num_units,
                  .block_bytes = cache_.layout.BytesPerBlockPerLayer(), .staging = staging,
                  .max_ctas = max_ctas, .remote_staging = remote_staging},
                 gather_stream_.get());
  gathered.Record(gather_stream_.get());
  trace.MarkGpu("g_end", index, gather_stream_.get());
}

absl::Status NcclKvSender::SendChunks(Peer& peer, const KvChunkPlan& plan,
                                      const KvSendRequest& request, TransferTrace& trace,
                                      absl::Status& forward_failed) {
  const WaitCheck receiver_alive = ReceiverAlive(peer);
  const int slots = options_.num_staging_slots;
  // Overlap: a chunk is gathered once the forward pass wrote every layer it covers; the
  // gather waits for that layer's event on our stream, so this thread runs ahead of the GPU.
  int64_t layers_ready = request.progress ? 0 : plan.num_layers;
  for (int64_t index = 0; index < plan.num_chunks(); ++index) {
    if (options_.before_chunk_for_test) options_.before_chunk_for_test(index);
    const KvChunk chunk = plan.chunk(index);
    TANDEM_RETURN_IF_ERROR(
        AwaitLayers(plan, chunk, request, index, layers_ready, forward_failed, trace));
    const int slot = static_cast<int>(index % slots);
    std::byte* staging = staging_.as<std::byte>() + slot * slot_bytes_;
    // The slot is free once the send that last used it completed.
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(gather_stream_.get(), sent_[slot].get(), 0));
    // The first gather runs alone (the wire waits for it); every later one runs beside the
    // send of the chunk before it.
    Gather(plan, index, staging, index == 0 ? 0 : options_.pack_max_ctas,
           /*remote_staging=*/false, gathered_[slot], trace);
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(nccl_stream_.get(), gathered_[slot].get(), 0));
    trace.MarkGpu("s", index, nccl_stream_.get());
    const size_t bytes = 2 * static_cast<size_t>(chunk.num_units) * cache_.layout.BytesPerBlockPerLayer();
    TANDEM_RETURN_IF_ERROR(peer.kv().Finish(
        ncclSend(staging, bytes, ncclUint8, /*peer=*/1, peer.kv().get(), nccl_stream_.get()),
        "ncclSend", request.deadline, receiver_alive));
    sent_[slot].Record(nccl_stream_.get());
    trace.MarkGpu("s_end", index, nccl_stream_.get());
  }
  trace.Mark("enqueued");
  done_.Record(nccl_stream_.get());
  return absl::OkStatus();
}

absl::Status NcclKvSender::SendChunksDirect(Peer& peer, const KvChunkPlan& plan,
                                            const KvSendRequest& request, uint64_t sequence,
                                            TransferTrace& trace, absl::Status& forward_failed) {
  const WaitCheck receiver_alive = ReceiverAlive(peer);
  const int64_t num_chunks = plan.num_chunks();
  int64_t layers_ready = request.progress ? 0 : plan.num_layers;
  int64_t announced = 0;  // chunks [0, announced) are announced to the receiver
  // Announces chunk `announced` once its gather completed; without `wait`, only if it has.
  auto announce = [&](bool wait) -> absl::Status {
    cudaEvent_t event = landed_[announced % 2].get();
    if (!wait && cudaEventQuery(event) != cudaSuccess) return absl::OkStatus();
    TANDEM_RETURN_IF_ERROR(WaitForEvent(event, request.deadline, "kv direct gather", receiver_alive));
    TANDEM_RETURN_IF_ERROR(nccl_control::WriteChunkLanded(
        peer.socket, {.sequence = sequence, .chunk = announced}, request.deadline));
    if (announced == 0) trace.Mark("first_landed");
    ++announced;
    return absl::OkStatus();
  };
  for (int64_t index = 0; index < num_chunks; ++index) {
    if (options_.before_chunk_for_test) options_.before_chunk_for_test(index);
    const KvChunk chunk = plan.chunk(index);
    const int64_t needed = (chunk.first_unit + chunk.num_units - 1) / plan.num_blocks + 1;
    if (needed > layers_ready && forward_failed.ok() && announced < index) {
      // Tell the receiver about a landed chunk before waiting for the forward pass.
      TANDEM_RETURN_IF_ERROR(announce(/*wait=*/false));
    }
    TANDEM_RETURN_IF_ERROR(
        AwaitLayers(plan, chunk, request, index, layers_ready, forward_failed, trace));
    // The receiver's slot is free again once it scattered the chunk that last used it, which
    // may be one of the previous transfer's (its notices come in the order chunks were
    // written).
    const int64_t slot = index % peer.peer_slots;
    while (std::any_of(peer.unfreed.begin(), peer.unfreed.end(),
                       [&](const nccl_control::ChunkNotice& n) {
                         return n.chunk % peer.peer_slots == slot;
                       })) {
      absl::StatusOr<nccl_control::ChunkNotice> free =
          nccl_control::ReadSlotFree(peer.socket, request.deadline);
      if (!free.ok()) {
        if (nccl_control::PeerClosed(peer.socket)) {
          return absl::UnavailableError("kv receiver closed its connection mid-transfer (died?)");
        }
        if (absl::IsDeadlineExceeded(free.status())) {
          return absl::DeadlineExceededError(
              "kv transfer deadline passed waiting for the receiver to free a staging slot");
        }
        return free.status();
      }
      const nccl_control::ChunkNotice& want = peer.unfreed.front();
      if (free->sequence != want.sequence || free->chunk != want.chunk) {
        return absl::DataLossError(absl::StrCat("kv slot notice for chunk ", free->chunk,
                                                " of transfer ", free->sequence, ", expected ",
                                                want.chunk, " of ", want.sequence));
      }
      peer.unfreed.pop_front();
    }
    // Uncapped: the gather is the wire, nothing else needs room beside it.
    Gather(plan, index, peer.peer_staging + slot * peer.peer_slot_bytes, /*max_ctas=*/0,
           /*remote_staging=*/true, landed_[index % 2], trace);
    peer.unfreed.push_back({.sequence = sequence, .chunk = index});
    if (announced < index) TANDEM_RETURN_IF_ERROR(announce(/*wait=*/true));  // the one before
  }
  while (announced < num_chunks) TANDEM_RETURN_IF_ERROR(announce(/*wait=*/true));
  trace.Mark("enqueued");
  done_.Record(gather_stream_.get());
  return absl::OkStatus();
}

absl::Status NcclKvSender::WaitSent(Peer& peer, absl::Time deadline) {
  absl::Status done = WaitForEvent(done_.get(), deadline, "kv transfer", ReceiverAlive(peer));
  if (absl::IsDeadlineExceeded(done)) {
    return absl::DeadlineExceededError("kv transfer deadline passed before the receiver took the KV");
  }
  return done;
}

absl::Status NcclKvSender::Send(uint64_t id, const KvSendRequest& request, bool& in_step) {
  // Refusals before the header leave the pair as it was; any failure after it breaks the
  // pair unless the trailer reported it.
  if (Cancelled(id)) return absl::CancelledError("kv transfer cancelled");  // before connecting
  const int64_t num_blocks = static_cast<int64_t>(request.src_blocks.size());
  for (int32_t b : request.src_blocks) {
    if (b < 0 || b >= cache_.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("src block ", b, " outside the cache"));
    }
  }
  if (request.progress && request.progress->num_layers() != cache_.layout.num_layers) {
    return absl::InvalidArgumentError("kv layer progress has a layer count != the cache's");
  }
  TransferTrace trace("send");
  trace.Mark("job");
  absl::StatusOr<Peer*> connected = Connected(request);
  if (!connected.ok()) {
    in_step = false;  // drops whatever half-built pair there was
    return connected.status();
  }
  Peer* peer = *connected;
  if (Cancelled(id)) return absl::CancelledError("kv transfer cancelled");  // last chance
  if (absl::Now() >= request.deadline) {
    return absl::DeadlineExceededError("kv transfer deadline passed before it started");
  }
  const KvChunkPlan plan{
      .num_blocks = num_blocks, .num_layers = cache_.layout.num_layers,
      .units_per_chunk = peer->units_per_chunk,
      .edge_units = std::min<int64_t>(  // at the chunk size or above: uniform chunks
          EdgeUnits(options_.edge_chunk_bytes, 2 * cache_.layout.BytesPerBlockPerLayer()),
          peer->units_per_chunk),
      .ramp = std::clamp<int64_t>(options_.edge_ramp, 1, 64)};
  nccl_control::TransferHeader header{.sequence = peer->next_sequence++,
                                      .reservation_id = request.reservation_id,
                                      .num_blocks = static_cast<int32_t>(num_blocks),
                                      .units_per_chunk = peer->units_per_chunk,
                                      .edge_units = static_cast<int32_t>(plan.edge_units),
                                      .ramp = static_cast<int32_t>(plan.ramp),
                                      .num_tokens = request.num_tokens};
  in_step = false;  // until the trailer is out
  TANDEM_RETURN_IF_ERROR(nccl_control::Write(peer->socket, header, request.deadline));
  trace.Mark("header");
  // After the header, which starts the receiver's posts (the wire waits for them). The
  // previous transfer's kernels are done (WaitSent or DrainStreams waited): the pinned ids
  // are free to overwrite.
  std::memcpy(block_ids_host_.data(), request.src_blocks.data(), sizeof(int32_t) * num_blocks);
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(block_ids_.data(), block_ids_host_.data(),
                                    sizeof(int32_t) * num_blocks, cudaMemcpyHostToDevice,
                                    gather_stream_.get()));
  absl::Status outcome;  // what the trailer reports
  TANDEM_RETURN_IF_ERROR(peer->direct()
                             ? SendChunksDirect(*peer, plan, request, header.sequence, trace, outcome)
                             : SendChunks(*peer, plan, request, trace, outcome));
  nccl_control::TransferTrailer trailer{.sequence = header.sequence,
                                        .first_token_id = request.first_token_id,
                                        .first_logprob = request.first_logprob,
                                        .cached_prompt_tokens = request.cached_prompt_tokens};
  if (outcome.ok() && request.first_token_pending) {
    absl::StatusOr<KvFirstToken> first = jobs_.WaitFirstToken(id, request.deadline);
    if (first.ok()) {
      trailer.first_token_id = first->token_id;
      trailer.first_logprob = first->logprob;
      trailer.cached_prompt_tokens = first->cached_prompt_tokens;
      trace.Mark("first_token");
    } else {
      outcome = first.status();
    }
  }
  if (outcome.ok() && Cancelled(id)) outcome = absl::CancelledError("kv transfer cancelled");
  trailer.code = static_cast<int32_t>(outcome.code());
  trailer.message = std::string(outcome.message());
  TANDEM_RETURN_IF_ERROR(nccl_control::Write(peer->socket, trailer, request.deadline));
  TANDEM_RETURN_IF_ERROR(WaitSent(*peer, request.deadline));
  trace.Mark("sent");
  trace.Log(request.reservation_id);
  in_step = true;
  return outcome;
}

}  // namespace tandem
