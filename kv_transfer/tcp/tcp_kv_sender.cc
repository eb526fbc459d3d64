#include "kv_transfer/tcp/tcp_kv_sender.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem {

using internal::v1::KvFrame;

TcpKvSender::TcpKvSender(KvCacheView cache, TcpKvSenderOptions options)
    : cache_(std::move(cache)), options_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

TcpKvSender::~TcpKvSender() {
  jobs_.Stop();
  thread_.join();
}

uint64_t TcpKvSender::StartSend(KvSendRequest request) { return jobs_.Push(std::move(request)); }

std::optional<absl::Status> TcpKvSender::Poll(uint64_t transfer_id) {
  return jobs_.Poll(transfer_id);
}

void TcpKvSender::Cancel(uint64_t transfer_id) { jobs_.Cancel(transfer_id); }

void TcpKvSender::SetFirstToken(uint64_t transfer_id, KvFirstToken token) {
  jobs_.SetFirstToken(transfer_id, token);
}

void TcpKvSender::WaitForProgress(absl::Duration timeout) { jobs_.WaitForFinish(timeout); }

void TcpKvSender::Loop() {
  while (std::optional<KvSendQueue::Job> job = jobs_.Next()) {
    absl::Status status = Send(job->first, job->second);
    if (!status.ok()) peers_.erase(job->second.endpoint);  // the stream may be mid-frame
    jobs_.Finish(job->first, std::move(status));
  }
}

absl::StatusOr<TcpKvSender::Peer*> TcpKvSender::Connected(const KvSendRequest& request) {
  auto it = peers_.find(request.endpoint);
  if (it != peers_.end() && it->second.receiver_incarnation == request.receiver_incarnation &&
      !tcp::IdleConnectionBroken(it->second.socket)) {
    return &it->second;
  }
  peers_.erase(request.endpoint);
  absl::Time deadline = std::min(request.deadline, absl::Now() + options_.connect_timeout);
  TANDEM_ASSIGN_OR_RETURN(tcp::Socket socket, tcp::Connect(request.endpoint, deadline));
  KvFrame hello;
  auto* handshake = hello.mutable_handshake();
  handshake->mutable_sender()->set_name(options_.identity.name);
  handshake->mutable_sender()->set_incarnation(options_.identity.incarnation);
  handshake->set_expected_receiver_incarnation(request.receiver_incarnation);
  handshake->set_kv_layout(options_.identity.model_fingerprint);
  TANDEM_RETURN_IF_ERROR(tcp::WriteFrame(socket, hello, deadline));
  TANDEM_ASSIGN_OR_RETURN(KvFrame reply, tcp::ReadFrame(socket, deadline));
  if (!reply.has_handshake_ack()) return absl::UnavailableError("kv peer sent no handshake ack");
  if (!reply.handshake_ack().accepted()) {
    return absl::FailedPreconditionError(
        absl::StrCat("kv peer ", request.endpoint, " refused: ", reply.handshake_ack().error()));
  }
  Peer& peer = peers_[request.endpoint];
  peer.socket = std::move(socket);
  peer.receiver_incarnation = request.receiver_incarnation;
  return &peer;
}

absl::Status TcpKvSender::SendLayer(uint64_t id, const KvSendRequest& request, Peer& peer,
                                    int64_t layer, uint64_t& sequence) {
  const size_t block_bytes = cache_.layout.BytesPerBlockPerLayer();
  const int64_t per_chunk =
      std::max<int64_t>(1, static_cast<int64_t>(options_.max_chunk_bytes / (2 * block_bytes)));
  const int64_t num_blocks = static_cast<int64_t>(request.src_blocks.size());
  for (int64_t first = 0; first < num_blocks; first += per_chunk) {
    if (Cancelled(id)) return absl::CancelledError("kv transfer cancelled");
    if (absl::Now() >= request.deadline) {
      return absl::DeadlineExceededError("kv transfer deadline passed");
    }
    int64_t count = std::min(per_chunk, num_blocks - first);
    KvFrame frame;
    auto* chunk = frame.mutable_chunk();
    chunk->set_reservation_id(request.reservation_id);
    chunk->set_layer(static_cast<int32_t>(layer));
    chunk->set_first_block_index(static_cast<int32_t>(first));
    chunk->set_num_blocks(static_cast<int32_t>(count));
    chunk->set_sequence_number(sequence++);
    std::string* k = chunk->mutable_k();
    std::string* v = chunk->mutable_v();
    for (int64_t i = 0; i < count; ++i) {
      int32_t block = request.src_blocks[first + i];
      k->append(reinterpret_cast<const char*>(cache_.KBlock(layer, block)), block_bytes);
      v->append(reinterpret_cast<const char*>(cache_.VBlock(layer, block)), block_bytes);
    }
    TANDEM_RETURN_IF_ERROR(tcp::WriteFrame(peer.socket, frame, request.deadline));
  }
  return absl::OkStatus();
}

absl::Status TcpKvSender::Send(uint64_t id, const KvSendRequest& request) {
  if (Cancelled(id)) return absl::CancelledError("kv transfer cancelled");  // before connecting
  for (int32_t b : request.src_blocks) {
    if (b < 0 || b >= cache_.num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("src block ", b, " outside the cache"));
    }
  }
  if (request.progress && request.progress->num_layers() != cache_.layout.num_layers) {
    return absl::InvalidArgumentError("kv layer progress has a layer count != the cache's");
  }
  TANDEM_ASSIGN_OR_RETURN(Peer * peer, Connected(request));
  uint64_t sequence = 0;
  for (int64_t layer = 0; layer < cache_.layout.num_layers; ++layer) {
    // Overlap: a layer goes once the forward pass wrote it (host KV: as each layer ends;
    // device KV read through managed memory: once the pass synchronized). A failed pass
    // fails the transfer; the connection is dropped and the receiver fails the reservation.
    if (request.progress) {
      TANDEM_RETURN_IF_ERROR(request.progress->WaitForHostLayers(layer + 1, request.deadline));
    }
    TANDEM_RETURN_IF_ERROR(SendLayer(id, request, *peer, layer, sequence));
  }
  KvFirstToken first{.token_id = request.first_token_id, .logprob = request.first_logprob,
                     .cached_prompt_tokens = request.cached_prompt_tokens};
  if (request.first_token_pending) {
    TANDEM_ASSIGN_OR_RETURN(first, jobs_.WaitFirstToken(id, request.deadline));
  }
  KvFrame frame;
  auto* complete = frame.mutable_complete();
  complete->set_reservation_id(request.reservation_id);
  complete->set_num_tokens(request.num_tokens);
  complete->set_first_token_id(first.token_id);
  complete->mutable_first_logprob()->set_token_id(first.token_id);
  complete->mutable_first_logprob()->set_logprob(first.logprob);
  complete->set_sequence_number(sequence);
  complete->set_cached_prompt_tokens(first.cached_prompt_tokens);
  return tcp::WriteFrame(peer->socket, frame, request.deadline);
}

}  // namespace tandem
