#include "kv_transfer/nccl/nccl_kv_receiver.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/logging.h"
#include "common/status.h"
#include "kv_transfer/nccl/kv_pack_kernels.h"
#include "kv_transfer/receiver_leases.h"
#include "kv_transfer/nccl/transfer_trace.h"

namespace tandem {

// One accepted sender: its communicator (rank 1), streams and staging ring. The
// communicator is declared last so it is aborted first.
class NcclKvReceiver::Session {
 public:
  // Scatters alternate between two streams, so the last (short) chunk's scatter runs beside
  // the previous (long) one instead of behind it; scatter_stream also carries the block-id
  // upload (scatter_side waits for it) and joins both at the end of a transfer.
  CudaStream nccl_stream, scatter_stream, scatter_side;
  CudaEvent ids_uploaded, side_done;
  cudaStream_t scatter(int64_t chunk) const {
    return chunk % 2 == 0 ? scatter_stream.get() : scatter_side.get();
  }
  NcclMemory staging;  // from ncclMemAlloc when the sender registers staging
  DeviceBuffer block_ids, layer_ptrs;  // layer_ptrs: [K layers][V layers]
  PinnedBuffer block_ids_host;
  std::vector<CudaEvent> received, scattered;
  CudaEvent scatter_done;
  size_t slot_bytes = 0;
  uint64_t expected_sequence = 0;
  std::string sender_name;
  NcclComm comm;  // non-blocking: init, connect, split
  NcclComm data;  // the sender asked for a blocking child for KV (aborted first)
  const NcclComm& kv() const { return data.valid() ? data : comm; }
  bool direct = false;  // the sender writes into staging itself (direct writes)
  // Direct writes: SlotFree notices for a transfer's last chunks, sent after its arrival.
  std::vector<nccl_control::ChunkNotice> deferred_frees;
};

absl::StatusOr<std::unique_ptr<NcclKvReceiver>> NcclKvReceiver::Start(
    KvCacheView cache, NcclKvReceiverOptions options) {
  TANDEM_RETURN_IF_ERROR(cache.layout.Validate());
  if (cache.memory != KvMemory::kCudaDevice || cache.cuda_device < 0) {
    return absl::InvalidArgumentError("NcclKvReceiver needs a KV cache in CUDA device memory");
  }
  if (options.num_staging_slots < 1) {
    return absl::InvalidArgumentError("num_staging_slots must be at least 1");
  }
  TANDEM_RETURN_IF_ERROR(
      ValidateKvLayerPointers(cache.k, cache.v, cache.layout.BytesPerBlockPerLayer()));
  if (static_cast<int64_t>(cache.k.size()) != cache.layout.num_layers) {
    return absl::InvalidArgumentError("kv cache view has a K/V pointer count != num_layers");
  }
  {
    int previous = 0;
    TANDEM_CUDA_CHECK(cudaGetDevice(&previous));
    TANDEM_CUDA_CHECK(cudaSetDevice(cache.cuda_device));
    absl::Status loaded = PreloadKvPackKernels();
    TANDEM_CUDA_CHECK(cudaSetDevice(previous));
    TANDEM_RETURN_IF_ERROR(loaded);
  }
  DisableNcclMulticastUnlessSet();
  TANDEM_ASSIGN_OR_RETURN(auto listener, tcp::Listen(options.listen_host, options.port));
  return std::unique_ptr<NcclKvReceiver>(new NcclKvReceiver(
      std::move(cache), std::move(options), std::move(listener.first), listener.second));
}

NcclKvReceiver::NcclKvReceiver(KvCacheView cache, NcclKvReceiverOptions options,
                               tcp::Socket listener, int port)
    : cache_(std::move(cache)), options_(std::move(options)) {
  std::string host =
      options_.advertise_host.empty() ? options_.listen_host : options_.advertise_host;
  endpoint_ = absl::StrCat(host, ":", port);
  server_ = std::make_unique<tcp::ConnectionServer>(
      std::move(listener), [this](tcp::Socket& socket) { Serve(socket); });
}

NcclKvReceiver::~NcclKvReceiver() {
  stopping_ = true;
  server_.reset();  // joins every connection thread before the members they use go
}

absl::StatusOr<std::unique_ptr<NcclKvReceiver::Session>> NcclKvReceiver::Handshake(
    tcp::Socket& socket) {
  const absl::Time deadline = absl::Now() + options_.init_timeout;
  TANDEM_ASSIGN_OR_RETURN(nccl_control::Hello hello, nccl_control::ReadHello(socket, deadline));
  nccl_control::HelloAck ack{.receiver_incarnation = options_.identity.incarnation};
  auto session = std::make_unique<Session>();
  session->sender_name = hello.sender_name;
  if (hello.model_fingerprint != options_.identity.model_fingerprint) {
    ack.error = absl::StrCat("kv_layout mismatch: receiver has \"",
                             options_.identity.model_fingerprint, "\", sender has \"",
                             hello.model_fingerprint, "\"");
  } else if (hello.layout != cache_.layout.Describe()) {
    ack.error = absl::StrCat("cache layout mismatch: receiver has \"", cache_.layout.Describe(),
                             "\", sender has \"", hello.layout, "\"");
  } else if (hello.expected_receiver_incarnation != 0 &&
             hello.expected_receiver_incarnation != options_.identity.incarnation) {
    ack.error = absl::StrCat("receiver incarnation is ", options_.identity.incarnation,
                             ", sender expected ", hello.expected_receiver_incarnation);
  } else if (!hello.gpu_uuid.empty() && hello.gpu_uuid == GpuUuid(cache_.cuda_device)) {
    ack.error = absl::StrCat("kv sender ", hello.sender_name, " uses this receiver's GPU (",
                             hello.gpu_uuid, "): NCCL cannot pair a GPU with itself; put "
                             "prefill and decode workers on different GPUs or use "
                             "--kv_transport=tcp");
  } else if (sessions_.load() > options_.max_senders) {  // counts this one
    ack.error = absl::StrCat("receiver already serves ", options_.max_senders, " senders");
  } else {
    absl::Status allocated = [&]() -> absl::Status {
      const size_t unit_bytes = 2 * cache_.layout.BytesPerBlockPerLayer();
      session->slot_bytes =
          static_cast<size_t>(UnitsPerChunk(options_.max_chunk_bytes, unit_bytes,
                                            cache_.num_blocks, cache_.layout.num_layers)) *
          unit_bytes;
      // As the sender's: NCCL above the scatters, both above the decode steps.
      TANDEM_ASSIGN_OR_RETURN(session->nccl_stream, CudaStream::CreateWithPriority(5));
      TANDEM_ASSIGN_OR_RETURN(session->scatter_stream, CudaStream::CreateWithPriority(1));
      TANDEM_ASSIGN_OR_RETURN(session->scatter_side, CudaStream::CreateWithPriority(1));
      TANDEM_ASSIGN_OR_RETURN(session->ids_uploaded, CudaEvent::CreateWithoutTiming());
      TANDEM_ASSIGN_OR_RETURN(session->side_done, CudaEvent::CreateWithoutTiming());
      TANDEM_ASSIGN_OR_RETURN(session->staging, NcclMemory::Allocate(
          session->slot_bytes * options_.num_staging_slots,
          hello.register_staging || hello.direct_write));
      size_t ids_bytes = sizeof(int32_t) * static_cast<size_t>(std::max<int64_t>(1, cache_.num_blocks));
      TANDEM_ASSIGN_OR_RETURN(session->block_ids, DeviceBuffer::Allocate(ids_bytes));
      TANDEM_ASSIGN_OR_RETURN(session->block_ids_host, PinnedBuffer::Allocate(ids_bytes));
      std::vector<std::byte*> layer_ptrs = cache_.k;
      layer_ptrs.insert(layer_ptrs.end(), cache_.v.begin(), cache_.v.end());
      TANDEM_ASSIGN_OR_RETURN(session->layer_ptrs,
                              DeviceBuffer::Allocate(sizeof(std::byte*) * layer_ptrs.size()));
      TANDEM_CUDA_CHECK(cudaMemcpy(session->layer_ptrs.data(), layer_ptrs.data(),
                                   sizeof(std::byte*) * layer_ptrs.size(), cudaMemcpyHostToDevice));
      TANDEM_ASSIGN_OR_RETURN(session->scatter_done, CudaEvent::Create());
      for (int s = 0; s < options_.num_staging_slots; ++s) {
        TANDEM_ASSIGN_OR_RETURN(CudaEvent received, CudaEvent::Create());
        TANDEM_ASSIGN_OR_RETURN(CudaEvent scattered, CudaEvent::Create());
        session->received.push_back(std::move(received));
        session->scattered.push_back(std::move(scattered));
      }
      return absl::OkStatus();
    }();
    if (allocated.ok()) {
      ack.accepted = true;
      ack.max_chunk_bytes = session->slot_bytes;
      ack.staging_bytes = session->staging.size_bytes();
      session->direct = nccl_control::UseDirectWrite(hello.direct_write, ack.staging_bytes,
                                                     ack.max_chunk_bytes,
                                                     hello.sender_staging_bytes);
    } else {
      ack.error = absl::StrCat("receiver could not allocate staging: ", allocated.ToString());
    }
  }
  TANDEM_RETURN_IF_ERROR(nccl_control::Write(socket, ack, deadline));
  if (!ack.accepted) return absl::FailedPreconditionError(ack.error);
  TANDEM_ASSIGN_OR_RETURN(session->comm, NcclComm::Create(/*world_size=*/2, /*rank=*/1,
                                                          hello.unique_id, deadline));
  if (hello.blocking_data_communicator) {
    // The sender's connecting message (NcclComm::SplitBlocking), then the split.
    const WaitCheck sender_alive = [&socket]() -> absl::Status {
      if (nccl_control::PeerClosed(socket)) return absl::UnavailableError("kv sender closed");
      return absl::OkStatus();
    };
    TANDEM_RETURN_IF_ERROR(session->comm.Finish(
        ncclRecv(session->staging.data(), /*count=*/16, ncclUint8, /*peer=*/0,
                 session->comm.get(), session->nccl_stream.get()),
        "ncclRecv (connect)", deadline, sender_alive));
    session->received[0].Record(session->nccl_stream.get());
    TANDEM_RETURN_IF_ERROR(WaitForEvent(session->received[0].get(), deadline,
                                        "kv pair connect", sender_alive));
    TANDEM_ASSIGN_OR_RETURN(session->data, session->comm.SplitBlocking(deadline));
  }
  if (session->direct) {
    // The sender registers the same window and writes into it; we only read our own side.
    const WaitCheck sender_alive = [&socket]() -> absl::Status {
      if (nccl_control::PeerClosed(socket)) return absl::UnavailableError("kv sender closed");
      return absl::OkStatus();
    };
    TANDEM_RETURN_IF_ERROR(session->comm
                               .RegisterWindow(session->staging.data(),
                                               session->staging.size_bytes(), deadline,
                                               sender_alive)
                               .status());
  } else if (hello.register_staging) {
    NcclComm& kv = session->data.valid() ? session->data : session->comm;
    TANDEM_RETURN_IF_ERROR(kv.Register(session->staging.data(), session->staging.size_bytes()));
  }
  return session;
}

void NcclKvReceiver::Serve(tcp::Socket& socket) {
  TANDEM_CUDA_CHECK(cudaSetDevice(cache_.cuda_device));
  ++sessions_;
  absl::StatusOr<std::unique_ptr<Session>> session = Handshake(socket);
  if (!session.ok()) TANDEM_LOG(WARNING) << "kv receiver: handshake failed: " << session.status();
  while (session.ok() && !stopping_) {
    absl::Status ready = tcp::WaitReadable(socket, absl::Milliseconds(200));
    if (absl::IsDeadlineExceeded(ready)) continue;  // idle pair: keep it
    absl::StatusOr<nccl_control::TransferHeader> header =
        nccl_control::ReadTransferHeader(socket, absl::Now() + options_.recv_timeout);
    if (!header.ok()) break;  // sender gone (evicted, restarted, dead) or garbage
    if (!Receive(**session, socket, *header).ok()) break;
  }
  session = absl::CancelledError("closed");  // aborts the communicator, frees the ring
  --sessions_;
}

absl::Status NcclKvReceiver::Receive(Session& session, tcp::Socket& socket,
                                     const nccl_control::TransferHeader& header) {
  const size_t unit_bytes = 2 * cache_.layout.BytesPerBlockPerLayer();
  if (header.sequence != session.expected_sequence++) {
    return absl::DataLossError(absl::StrCat("kv header sequence ", header.sequence, ", expected ",
                                            session.expected_sequence - 1));
  }
  if (header.num_blocks < 0 || header.num_blocks > cache_.num_blocks ||
      header.units_per_chunk < 1 || header.edge_units < 0 || header.ramp < 1 ||
      header.ramp > 64 ||
      static_cast<size_t>(header.units_per_chunk) * unit_bytes > session.slot_bytes) {
    return absl::DataLossError("kv header does not fit this receiver");  // cannot even drain
  }
  const KvChunkPlan plan{.num_blocks = header.num_blocks,
                         .num_layers = cache_.layout.num_layers,
                         .units_per_chunk = header.units_per_chunk,
                         .edge_units = header.edge_units,
                         .ramp = header.ramp};
  TransferTrace trace("recv");
  trace.Mark("header");
  uint64_t generation = 0;  // ReceiveChunks claims the reservation; 0: drain only
  absl::Status status =
      session.direct ? ReceiveChunksDirect(session, socket, plan, header, generation, trace)
                     : ReceiveChunks(session, socket, plan, header, generation, trace);
  // The trailer: the sender's verdict on the KV (a failed or cancelled prefill still sends
  // every chunk) and the first token. Anything else leaves the pair out of step. It is
  // usually here already (the sender writes it once its sends are queued and the token is
  // known), so it is read while the last scatter runs.
  KvArrival arrival{.reservation_id = header.reservation_id, .num_tokens = header.num_tokens};
  if (status.ok()) {
    absl::StatusOr<nccl_control::TransferTrailer> trailer =
        nccl_control::ReadTransferTrailer(socket, absl::Now() + options_.recv_timeout);
    if (!trailer.ok()) {
      status = trailer.status();
    } else if (trailer->sequence != header.sequence) {
      status = absl::DataLossError(absl::StrCat("kv trailer sequence ", trailer->sequence,
                                                " after header ", header.sequence));
    } else if (trailer->code != 0) {
      arrival.status = absl::Status(static_cast<absl::StatusCode>(trailer->code),
                                    absl::StrCat("kv sender ", session.sender_name, ": ",
                                                 trailer->message));
    } else {
      arrival.first_token_id = trailer->first_token_id;
      arrival.first_logprob = trailer->first_logprob;
      arrival.cached_prompt_tokens = trailer->cached_prompt_tokens;
    }
    trace.Mark("trailer");
  }
  // Our scatters were launched only after their data had landed, so they finish without the
  // peer: wait for them (bounded, never a stream synchronize) before the reservation is
  // reported and its blocks are reused.
  session.side_done.Record(session.scatter_side.get());
  TANDEM_CUDA_CHECK(cudaStreamWaitEvent(session.scatter_stream.get(), session.side_done.get(), 0));
  session.scatter_done.Record(session.scatter_stream.get());
  absl::Status scattered = WaitForEvent(session.scatter_done.get(),
                                        absl::Now() + options_.recv_timeout, "kv scatter");
  if (!scattered.ok()) {
    TANDEM_LOG(ERROR) << "kv receiver: scatters did not finish: " << scattered;
    if (status.ok()) status = scattered;
  }
  trace.Mark("scattered");
  if (!status.ok()) arrival.status = status;
  // Report before anything that can block (ncclCommAbort).
  Report(std::move(arrival), generation);
  trace.Log(header.reservation_id);
  if (status.ok()) {
    // Direct writes: the slots of the last chunks are free (their scatters finished above).
    for (const nccl_control::ChunkNotice& notice : session.deferred_frees) {
      status = nccl_control::WriteSlotFree(socket, notice, absl::Now() + options_.recv_timeout);
      if (!status.ok()) break;
    }
  }
  session.deferred_frees.clear();
  if (!status.ok()) {
    TANDEM_LOG(WARNING) << "kv receiver: transfer of " << header.reservation_id << " from "
                        << session.sender_name << " failed (" << status
                        << "); aborting the communicator";
    session.data.Abort();  // stops our receive kernels; the sender rebuilds the pair
    session.comm.Abort();
    TANDEM_LOG(INFO) << "kv receiver: communicator aborted";
  }
  return status;
}

uint64_t NcclKvReceiver::Claim(Session& session, const nccl_control::TransferHeader& header) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(header.reservation_id);
  if (it == pending_.end()) return 0;
  Pending& p = it->second;
  const int64_t block_size = cache_.layout.block_size_tokens;
  const int64_t blocks_needed = (header.num_tokens + block_size - 1) / block_size;
  if (header.num_tokens <= 0 || header.num_blocks != blocks_needed ||
      header.num_blocks > static_cast<int64_t>(p.block_ids.size())) {
    arrivals_.push_back({.reservation_id = header.reservation_id,
                         .status = absl::InvalidArgumentError(absl::StrCat(
                             "kv transfer of ", header.num_blocks, " blocks for ",
                             header.num_tokens, " tokens does not fit a reservation of ",
                             p.block_ids.size(), " blocks"))});
    Forget(it);
    arrived_.notify_all();
    return 0;
  }
  p.writing_streams = {session.scatter_stream.get(), session.scatter_side.get()};
  std::memcpy(session.block_ids_host.data(), p.block_ids.data(),
              sizeof(int32_t) * header.num_blocks);
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(session.block_ids.data(), session.block_ids_host.data(),
                                    sizeof(int32_t) * header.num_blocks, cudaMemcpyHostToDevice,
                                    session.scatter_stream.get()));
  session.ids_uploaded.Record(session.scatter_stream.get());
  TANDEM_CUDA_CHECK(cudaStreamWaitEvent(session.scatter_side.get(), session.ids_uploaded.get(), 0));
  return p.generation;
}

bool NcclKvReceiver::StillWriting(const std::string& reservation_id, uint64_t generation) {
  if (generation == 0) return false;
  auto it = pending_.find(reservation_id);
  return it != pending_.end() && it->second.generation == generation;
}

absl::Status NcclKvReceiver::ReceiveChunks(Session& session, tcp::Socket& socket,
                                           const KvChunkPlan& plan,
                                           const nccl_control::TransferHeader& header,
                                           uint64_t& generation, TransferTrace& trace) {
  const size_t block_bytes = cache_.layout.BytesPerBlockPerLayer();
  const WaitCheck sender_alive = [&]() -> absl::Status {
    TANDEM_RETURN_IF_ERROR(session.kv().AsyncError());
    if (nccl_control::PeerClosed(socket)) {
      return absl::UnavailableError(absl::StrCat(
          "kv sender ", session.sender_name, " closed its connection mid-transfer (died?)"));
    }
    if (stopping_) return absl::CancelledError("kv receiver stopping");
    return absl::OkStatus();
  };
  const int slots = options_.num_staging_slots;
  auto staging = [&](int64_t c) {
    return session.staging.as<std::byte>() + (c % slots) * session.slot_bytes;
  };
  trace.MarkGpu("r_base", -1, session.nccl_stream.get());
  auto post = [&](int64_t c) -> absl::Status {
    trace.MarkGpu("r", c, session.nccl_stream.get());
    const size_t bytes = 2 * static_cast<size_t>(plan.chunk(c).num_units) * block_bytes;
    TANDEM_RETURN_IF_ERROR(session.kv().Finish(
        ncclRecv(staging(c), bytes, ncclUint8, /*peer=*/0, session.kv().get(),
                 session.nccl_stream.get()),
        "ncclRecv", absl::Now() + options_.recv_timeout, sender_alive));
    session.received[c % slots].Record(session.nccl_stream.get());
    trace.MarkGpu("r_end", c, session.nccl_stream.get());
    return absl::OkStatus();
  };
  const int64_t num_chunks = plan.num_chunks();
  // The first receives go out before anything else: the sender's first message is on its
  // way (the wire waits for this post). Staging does not depend on the reservation.
  absl::Status posted = absl::OkStatus();
  for (int64_t c = 0; c < std::min<int64_t>(slots, num_chunks) && posted.ok(); ++c) {
    posted = post(c);
  }
  generation = Claim(session, header);  // even after a failed post: Report needs it
  TANDEM_RETURN_IF_ERROR(posted);
  trace.Mark("posted");
  for (int64_t c = 0; c < num_chunks; ++c) {
    const int slot = static_cast<int>(c % slots);
    absl::Status landed = WaitForEvent(session.received[slot].get(),
                                       absl::Now() + options_.recv_timeout, "ncclRecv",
                                       sender_alive);
    if (absl::IsDeadlineExceeded(landed)) {
      return absl::DeadlineExceededError(
          absl::StrCat("no kv data from sender ", session.sender_name, " within ",
                       absl::FormatDuration(options_.recv_timeout)));
    }
    TANDEM_RETURN_IF_ERROR(landed);
    if (c == 0) trace.Mark("first_landed");
    Scatter(session, plan, header, generation, c, trace);
    if (c + slots < num_chunks) {
      TANDEM_CUDA_CHECK(cudaStreamWaitEvent(session.nccl_stream.get(),
                                            session.scattered[slot].get(), 0));
      TANDEM_RETURN_IF_ERROR(post(c + slots));
    }
  }
  return absl::OkStatus();
}

absl::Status NcclKvReceiver::ReceiveChunksDirect(Session& session, tcp::Socket& socket,
                                                 const KvChunkPlan& plan,
                                                 const nccl_control::TransferHeader& header,
                                                 uint64_t& generation, TransferTrace& trace) {
  generation = Claim(session, header);
  const int slots = options_.num_staging_slots;
  const int64_t num_chunks = plan.num_chunks();
  for (int64_t c = 0; c < num_chunks; ++c) {
    // The sender's notice that chunk c is in our staging: waited for in short slices, so a
    // stopping receiver does not wait out the timeout.
    const absl::Time deadline = absl::Now() + options_.recv_timeout;
    for (;;) {
      absl::Status readable = tcp::WaitReadable(socket, absl::Milliseconds(20));
      if (readable.ok()) break;
      if (!absl::IsDeadlineExceeded(readable)) return readable;
      if (stopping_) return absl::CancelledError("kv receiver stopping");
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("no kv data from sender ", session.sender_name, " within ",
                         absl::FormatDuration(options_.recv_timeout)));
      }
    }
    absl::StatusOr<nccl_control::ChunkNotice> landed =
        nccl_control::ReadChunkLanded(socket, deadline);
    if (!landed.ok()) {
      if (nccl_control::PeerClosed(socket)) {
        return absl::UnavailableError(absl::StrCat(
            "kv sender ", session.sender_name, " closed its connection mid-transfer (died?)"));
      }
      return landed.status();
    }
    if (landed->sequence != header.sequence || landed->chunk != c) {
      return absl::DataLossError(absl::StrCat("kv chunk notice ", landed->chunk, " of transfer ",
                                              landed->sequence, ", expected ", c, " of ",
                                              header.sequence));
    }
    if (c == 0) trace.Mark("first_landed");
    const int slot = static_cast<int>(c % slots);
    Scatter(session, plan, header, generation, c, trace);
    // The sender waits for this before it writes the slot again, in this transfer or the
    // next (it does not wait for the arrival), so every chunk is answered: at once when a
    // later chunk of this transfer reuses the slot, else after the arrival is reported
    // (Receive), off its critical path.
    if (c + slots < num_chunks) {
      TANDEM_RETURN_IF_ERROR(WaitForEvent(session.scattered[slot].get(),
                                          absl::Now() + options_.recv_timeout, "kv scatter"));
      TANDEM_RETURN_IF_ERROR(nccl_control::WriteSlotFree(
          socket, {.sequence = header.sequence, .chunk = c}, absl::Now() + options_.recv_timeout));
    } else {
      session.deferred_frees.push_back({.sequence = header.sequence, .chunk = c});
    }
  }
  trace.Mark("posted");
  return absl::OkStatus();
}

void NcclKvReceiver::Scatter(Session& session, const KvChunkPlan& plan,
                             const nccl_control::TransferHeader& header, uint64_t generation,
                             int64_t c, TransferTrace& trace) {
  const int slot = static_cast<int>(c % options_.num_staging_slots);
  std::byte* const* layers = session.layer_ptrs.as<std::byte* const>();
  std::lock_guard<std::mutex> lock(mu_);
  trace.MarkGpu("x", c, session.scatter(c));
  if (StillWriting(header.reservation_id, generation)) {
    const KvChunk chunk = plan.chunk(c);
    LaunchKvScatter({.k_layers = layers, .v_layers = layers + cache_.layout.num_layers,
                     .block_ids = session.block_ids.as<int32_t>(),
                     .num_blocks = static_cast<int32_t>(plan.num_blocks),
                     .first_unit = chunk.first_unit, .count = chunk.num_units,
                     .block_bytes = cache_.layout.BytesPerBlockPerLayer(),
                     .staging = session.staging.as<std::byte>() + slot * session.slot_bytes,
                     // Every scatter but the last runs beside a later chunk's transfer; the
                     // last one runs alone (the arrival waits for it).
                     .max_ctas = c + 1 == plan.num_chunks() ? 0 : options_.pack_max_ctas},
                    session.scatter(c));
  }
  session.scattered[slot].Record(session.scatter(c));
  trace.MarkGpu("x_end", c, session.scatter(c));
}

void NcclKvReceiver::Report(KvArrival arrival, uint64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!StillWriting(arrival.reservation_id, generation)) return;  // drained, cancelled, expired
  auto it = pending_.find(arrival.reservation_id);
  it->second.writing_streams = {};
  if (!arrival.status.ok()) arrival = {.reservation_id = arrival.reservation_id,
                                       .status = arrival.status};
  arrivals_.push_back(std::move(arrival));
  pending_.erase(it);
  arrived_.notify_all();
}

void NcclKvReceiver::Forget(std::map<std::string, Pending>::iterator it) {
  // A connection thread launches scatters into this reservation only under mu_ (held here),
  // so once the ones already launched finish, none of its bytes is written again.
  for (cudaStream_t stream : it->second.writing_streams) {
    if (stream != nullptr) cudaStreamSynchronize(stream);
  }
  pending_.erase(it);
}

void NcclKvReceiver::Expect(const std::string& reservation_id, std::vector<int32_t> block_ids,
                            absl::Time deadline) {
  for (int32_t b : block_ids) TANDEM_CHECK(b >= 0 && b < cache_.num_blocks) << "block " << b;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = pending_.find(reservation_id); it != pending_.end()) Forget(it);
  pending_[reservation_id] = Pending{.block_ids = std::move(block_ids), .deadline = deadline,
                                     .generation = next_generation_++};
}

void NcclKvReceiver::ExpireLeases(absl::Time now) {
  tandem::ExpireLeases(pending_, arrivals_, now, [this](auto it) {
    auto next = std::next(it);
    Forget(it);  // waits for scatters already launched into it
    return next;
  });
}

std::vector<KvArrival> NcclKvReceiver::PollArrivals() {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeases(absl::Now());
  return std::exchange(arrivals_, {});
}

std::vector<KvArrival> NcclKvReceiver::WaitForArrivals(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  WaitForArrivalOrLease(lock, arrived_, pending_, arrivals_, timeout);
  ExpireLeases(absl::Now());
  return std::exchange(arrivals_, {});
}

void NcclKvReceiver::Cancel(const std::string& reservation_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = pending_.find(reservation_id); it != pending_.end()) Forget(it);
}

}  // namespace tandem
