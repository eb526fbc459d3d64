#include "kv_transfer/loopback/loopback_kv_transfer.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem {

LoopbackKvReceiver* LoopbackKvNetwork::Find(const std::string& endpoint) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = receivers_.find(endpoint);
  return it == receivers_.end() ? nullptr : it->second;
}

LoopbackKvReceiver::LoopbackKvReceiver(KvCacheView cache, LoopbackKvNetwork& network)
    : cache_(std::move(cache)), network_(network) {
  std::lock_guard<std::mutex> lock(network_.mu_);
  endpoint_ = absl::StrCat("loopback:", network_.next_port_++);
  network_.receivers_[endpoint_] = this;
}

LoopbackKvReceiver::~LoopbackKvReceiver() {
  std::lock_guard<std::mutex> lock(network_.mu_);
  network_.receivers_.erase(endpoint_);
}

void LoopbackKvReceiver::Expect(const std::string& reservation_id,
                                std::vector<int32_t> block_ids, absl::Time deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_[reservation_id] = {std::move(block_ids), deadline};
}

std::vector<KvArrival> LoopbackKvReceiver::PollArrivals() {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Time now = absl::Now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.deadline > now) {
      ++it;
      continue;
    }
    arrivals_.push_back({.reservation_id = it->first,
                         .status = absl::DeadlineExceededError("kv lease expired")});
    it = pending_.erase(it);
  }
  return std::exchange(arrivals_, {});
}

void LoopbackKvReceiver::Cancel(const std::string& reservation_id) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.erase(reservation_id);
}

absl::Status LoopbackKvReceiver::Deliver(const KvCacheView& source,
                                         const KvSendRequest& request) {
  if (source.layout != cache_.layout) {
    return absl::FailedPreconditionError(absl::StrCat("kv_layout mismatch: ",
                                                      source.layout.Describe(), " vs ",
                                                      cache_.layout.Describe()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(request.reservation_id);
  if (it == pending_.end()) return absl::OkStatus();  // late: dropped, as over TCP
  if (request.src_blocks.size() > it->second.block_ids.size()) {
    return absl::InvalidArgumentError("more blocks than the reservation holds");
  }
  size_t bytes = cache_.layout.BytesPerBlockPerLayer();
  for (int64_t layer = 0; layer < cache_.layout.num_layers; ++layer) {
    for (size_t i = 0; i < request.src_blocks.size(); ++i) {
      int32_t dst = it->second.block_ids[i], src = request.src_blocks[i];
      std::memcpy(cache_.KBlock(layer, dst), source.KBlock(layer, src), bytes);
      std::memcpy(cache_.VBlock(layer, dst), source.VBlock(layer, src), bytes);
    }
  }
  arrivals_.push_back({.reservation_id = request.reservation_id, .status = absl::OkStatus(),
                       .num_tokens = request.num_tokens,
                       .first_token_id = request.first_token_id,
                       .first_logprob = request.first_logprob,
                       .cached_prompt_tokens = request.cached_prompt_tokens});
  pending_.erase(it);
  return absl::OkStatus();
}

uint64_t LoopbackKvSender::StartSend(KvSendRequest request) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = next_id_++;
  if (request.first_token_pending) {
    waiting_[id] = std::move(request);  // delivered with its first token
  } else {
    done_[id] = Deliver(request);
  }
  return id;
}

absl::Status LoopbackKvSender::Deliver(const KvSendRequest& request) {
  LoopbackKvReceiver* receiver = network_.Find(request.endpoint);
  if (receiver == nullptr) {
    return absl::UnavailableError(absl::StrCat("no kv receiver at ", request.endpoint));
  }
  if (request.progress) {
    TANDEM_RETURN_IF_ERROR(
        request.progress->WaitForHostLayers(cache_.layout.num_layers, request.deadline));
  }
  return receiver->Deliver(cache_, request);
}

void LoopbackKvSender::SetFirstToken(uint64_t transfer_id, KvFirstToken token) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = waiting_.find(transfer_id);
  if (it == waiting_.end()) return;
  KvSendRequest request = std::move(it->second);
  waiting_.erase(it);
  request.first_token_pending = false;
  request.first_token_id = token.token_id;
  request.first_logprob = token.logprob;
  request.cached_prompt_tokens = token.cached_prompt_tokens;
  done_[transfer_id] = Deliver(request);
}

void LoopbackKvSender::Cancel(uint64_t transfer_id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (waiting_.erase(transfer_id) > 0) {
    done_[transfer_id] = absl::CancelledError("kv transfer cancelled");
  }
}

std::optional<absl::Status> LoopbackKvSender::Poll(uint64_t transfer_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = done_.find(transfer_id);
  if (it == done_.end()) return std::nullopt;
  absl::Status status = std::move(it->second);
  done_.erase(it);
  return status;
}

}  // namespace tandem
