// Moving a request's KV blocks from a prefill worker's cache into a decode worker's
// reserved blocks: the interfaces every transport (TCP, loopback, NCCL) implements.
//
// Threading: the engine thread calls only the non-blocking Start/Expect/Poll/Cancel;
// transports own their I/O threads. A sender reads the source blocks while they are pinned
// (the engine keeps them out of reuse until Poll reports completion); a receiver writes only
// into blocks of a reservation that is still expected, under its own lock, so once Cancel
// returns no byte of that reservation is written again and its blocks may be reused.
// Late frames for cancelled or unknown reservations are read and dropped.
#pragma once

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/kv_cache/kv_cache_view.h"
#include "common/kv_cache/kv_layer_progress.h"
#include "common/kv_cache/kv_layout.h"

namespace tandem {

// Who a transfer peer is; both sides compare these at handshake.
struct KvPeerIdentity {
  std::string name;
  uint64_t incarnation = 0;
  std::string model_fingerprint;  // model identity + KvLayout::Describe()
};

// What the prefill worker sampled after the prompt: the decode worker continues from it.
struct KvFirstToken {
  int32_t token_id = -1;  // -1: none (n > 1 and beams: the decode worker computes it)
  float logprob = 0.0f;
  int32_t cached_prompt_tokens = 0;  // prompt tokens the sender reused from its prefix cache
};

struct KvSendRequest {
  std::string endpoint;             // the receiver's kv_endpoint (host:port)
  uint64_t receiver_incarnation = 0;  // refuse to send to a restarted receiver
  std::string reservation_id;
  std::vector<int32_t> src_blocks;  // local blocks, in sequence order
  int32_t num_tokens = 0;           // tokens whose KV the blocks hold
  int32_t first_token_id = -1;      // sampled by the prefill worker
  float first_logprob = 0.0f;
  int32_t cached_prompt_tokens = 0;  // prompt tokens the sender reused from its prefix cache
  absl::Time deadline;
  // Overlap with the prefill forward pass (docs/kv_transfer.md): the blocks' K/V is still
  // being written by the pass that `progress` tracks; the sender reads a layer only after
  // it is published. Null: written already.
  std::shared_ptr<KvLayerProgress> progress;
  // The first token is not known yet (the pass that samples it is running): the first_*
  // and cached_prompt_tokens fields above are ignored and KvSender::SetFirstToken supplies
  // them; the KV may move before it, the transfer ends after it.
  bool first_token_pending = false;
};

class KvSender {
 public:
  virtual ~KvSender() = default;
  // Queues a transfer and returns its id at once.
  virtual uint64_t StartSend(KvSendRequest request) = 0;
  // nullopt while in flight; then the final status (OK, DEADLINE_EXCEEDED, UNAVAILABLE when
  // the peer is gone or restarted, FAILED_PRECONDITION on a layout mismatch, CANCELLED).
  // A finished transfer's status is returned once, then forgotten.
  virtual std::optional<absl::Status> Poll(uint64_t transfer_id) = 0;
  // Stops a transfer; Poll then reports CANCELLED (or its earlier final status).
  virtual void Cancel(uint64_t transfer_id) = 0;
  // The first token of a transfer started with first_token_pending (ignored otherwise and
  // after Cancel). Until it comes (or Cancel) such a transfer cannot finish OK.
  virtual void SetFirstToken(uint64_t transfer_id, KvFirstToken token) = 0;
  // Waits up to `timeout` until some transfer may have finished (then Poll). Transports
  // with their own threads override it to wake at once; the default sleeps a millisecond.
  virtual void WaitForProgress(absl::Duration timeout);
};

inline void KvSender::WaitForProgress(absl::Duration timeout) {
  absl::SleepFor(std::min(absl::Milliseconds(1), timeout));
}

// What arrived for one reservation.
struct KvArrival {
  std::string reservation_id;
  absl::Status status;  // OK, DEADLINE_EXCEEDED (lease expired), or the sender's failure
  int32_t num_tokens = 0;
  int32_t first_token_id = -1;
  float first_logprob = 0.0f;
  int32_t cached_prompt_tokens = 0;
};

class KvReceiver {
 public:
  virtual ~KvReceiver() = default;
  // host:port senders connect to.
  virtual std::string endpoint() const = 0;
  // Accepts KV for `reservation_id` into `block_ids` (in sequence order) until `deadline`.
  virtual void Expect(const std::string& reservation_id, std::vector<int32_t> block_ids,
                      absl::Time deadline) = 0;
  // Completed, failed and expired reservations since the last call; each reported once.
  virtual std::vector<KvArrival> PollArrivals() = 0;
  // PollArrivals, but waits up to `timeout` for something to report (a completion, a
  // failure or a lease expiry). Transports with their own threads override it to wake at
  // once; the default polls every millisecond.
  virtual std::vector<KvArrival> WaitForArrivals(absl::Duration timeout);
  // Forgets a reservation; no byte of it is written after this returns.
  virtual void Cancel(const std::string& reservation_id) = 0;
};

inline std::vector<KvArrival> KvReceiver::WaitForArrivals(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::vector<KvArrival> arrivals = PollArrivals();
    if (!arrivals.empty() || absl::Now() >= deadline) return arrivals;
    absl::SleepFor(std::min(absl::Milliseconds(1), deadline - absl::Now()));
  }
}

}  // namespace tandem
