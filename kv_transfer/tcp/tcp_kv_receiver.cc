#include "kv_transfer/tcp/tcp_kv_receiver.h"

#include "kv_transfer/receiver_leases.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status.h"

namespace tandem {

using internal::v1::KvFrame;

absl::StatusOr<std::unique_ptr<TcpKvReceiver>> TcpKvReceiver::Start(
    KvCacheView cache, TcpKvReceiverOptions options) {
  TANDEM_RETURN_IF_ERROR(cache.layout.Validate());
  TANDEM_ASSIGN_OR_RETURN(auto listener, tcp::Listen(options.listen_host, options.port));
  return std::unique_ptr<TcpKvReceiver>(new TcpKvReceiver(
      std::move(cache), std::move(options), std::move(listener.first), listener.second));
}

TcpKvReceiver::TcpKvReceiver(KvCacheView cache, TcpKvReceiverOptions options,
                             tcp::Socket listener, int port)
    : cache_(std::move(cache)), options_(std::move(options)) {
  std::string host =
      options_.advertise_host.empty() ? options_.listen_host : options_.advertise_host;
  endpoint_ = absl::StrCat(host, ":", port);
  server_ = std::make_unique<tcp::ConnectionServer>(
      std::move(listener), [this](tcp::Socket& socket) { Serve(socket); });
}

TcpKvReceiver::~TcpKvReceiver() {
  stopping_ = true;
  server_.reset();  // joins every connection thread before the members they use go
}

absl::Status TcpKvReceiver::Handshake(tcp::Socket& socket) {
  TANDEM_ASSIGN_OR_RETURN(KvFrame hello,
                          tcp::ReadFrame(socket, absl::Now() + options_.frame_timeout));
  KvFrame reply;
  auto* ack = reply.mutable_handshake_ack();
  if (!hello.has_handshake()) {
    ack->set_error("first frame must be a handshake");
  } else if (hello.handshake().kv_layout() != options_.identity.model_fingerprint) {
    ack->set_error(absl::StrCat("kv_layout mismatch: receiver has \"",
                                options_.identity.model_fingerprint, "\", sender has \"",
                                hello.handshake().kv_layout(), "\""));
  } else if (hello.handshake().expected_receiver_incarnation() != 0 &&
             hello.handshake().expected_receiver_incarnation() != options_.identity.incarnation) {
    ack->set_error(absl::StrCat("receiver incarnation is ", options_.identity.incarnation,
                                ", sender expected ",
                                hello.handshake().expected_receiver_incarnation()));
  } else {
    ack->set_accepted(true);
  }
  TANDEM_RETURN_IF_ERROR(tcp::WriteFrame(socket, reply, absl::Now() + options_.frame_timeout));
  if (!ack->accepted()) return absl::FailedPreconditionError(ack->error());
  return absl::OkStatus();
}

void TcpKvReceiver::Serve(tcp::Socket& socket) {
  if (!Handshake(socket).ok()) return;
  while (!stopping_) {
    absl::Status ready = tcp::WaitReadable(socket, absl::Milliseconds(200));
    if (absl::IsDeadlineExceeded(ready)) continue;  // idle connection: keep it
    absl::StatusOr<KvFrame> frame = tcp::ReadFrame(socket, absl::Now() + options_.frame_timeout);
    if (!frame.ok()) return;  // peer gone or garbage: its reservations expire by lease
    if (frame->has_chunk()) {
      OnChunk(frame->chunk());
    } else if (frame->has_complete()) {
      OnComplete(frame->complete());
    } else {
      return;  // protocol violation
    }
  }
}

void TcpKvReceiver::Fail(const std::string& reservation_id, absl::Status status) {
  pending_.erase(reservation_id);
  arrivals_.push_back({.reservation_id = reservation_id, .status = std::move(status)});
  arrived_.notify_all();
}

void TcpKvReceiver::OnChunk(const internal::v1::KvChunk& chunk) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(chunk.reservation_id());
  if (it == pending_.end()) return;  // cancelled, expired or unknown: a late frame
  Pending& p = it->second;
  const size_t block_bytes = cache_.layout.BytesPerBlockPerLayer();
  const int64_t first = chunk.first_block_index(), count = chunk.num_blocks();
  if (chunk.layer() < 0 || chunk.layer() >= cache_.layout.num_layers || first < 0 || count <= 0 ||
      first + count > static_cast<int64_t>(p.block_ids.size()) ||
      chunk.k().size() != count * block_bytes || chunk.v().size() != count * block_bytes) {
    Fail(chunk.reservation_id(),
         absl::InvalidArgumentError(absl::StrCat("kv chunk for layer ", chunk.layer(),
                                                 " blocks [", first, ", ", first + count,
                                                 ") does not fit the reservation")));
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    int32_t block = p.block_ids[first + i];
    std::memcpy(cache_.KBlock(chunk.layer(), block), chunk.k().data() + i * block_bytes,
                block_bytes);
    std::memcpy(cache_.VBlock(chunk.layer(), block), chunk.v().data() + i * block_bytes,
                block_bytes);
  }
  p.blocks_received += count;
}

void TcpKvReceiver::OnComplete(const internal::v1::KvComplete& complete) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(complete.reservation_id());
  if (it == pending_.end()) return;
  const Pending& p = it->second;
  int64_t block_size = cache_.layout.block_size_tokens;
  int64_t blocks_needed = (complete.num_tokens() + block_size - 1) / block_size;
  if (complete.num_tokens() <= 0 || blocks_needed > static_cast<int64_t>(p.block_ids.size()) ||
      p.blocks_received != blocks_needed * cache_.layout.num_layers) {
    Fail(complete.reservation_id(),
         absl::DataLossError(absl::StrCat("kv complete for ", complete.num_tokens(),
                                          " tokens but ", p.blocks_received,
                                          " layer-blocks arrived")));
    return;
  }
  arrivals_.push_back({.reservation_id = complete.reservation_id(),
                       .status = absl::OkStatus(),
                       .num_tokens = complete.num_tokens(),
                       .first_token_id = complete.first_token_id(),
                       .first_logprob = complete.first_logprob().logprob(),
                       .cached_prompt_tokens = complete.cached_prompt_tokens()});
  pending_.erase(it);
  arrived_.notify_all();
}

void TcpKvReceiver::Expect(const std::string& reservation_id, std::vector<int32_t> block_ids,
                           absl::Time deadline) {
  for (int32_t b : block_ids) TANDEM_CHECK(b >= 0 && b < cache_.num_blocks) << "block " << b;
  std::lock_guard<std::mutex> lock(mu_);
  pending_[reservation_id] = Pending{.block_ids = std::move(block_ids), .deadline = deadline};
}

void TcpKvReceiver::ExpireLeases(absl::Time now) {
  tandem::ExpireLeases(pending_, arrivals_, now, [this](auto it) { return pending_.erase(it); });
}

std::vector<KvArrival> TcpKvReceiver::PollArrivals() {
  std::lock_guard<std::mutex> lock(mu_);
  ExpireLeases(absl::Now());
  return std::exchange(arrivals_, {});
}

std::vector<KvArrival> TcpKvReceiver::WaitForArrivals(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  WaitForArrivalOrLease(lock, arrived_, pending_, arrivals_, timeout);
  ExpireLeases(absl::Now());
  return std::exchange(arrivals_, {});
}

void TcpKvReceiver::Cancel(const std::string& reservation_id) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.erase(reservation_id);
}

}  // namespace tandem
