// What the decode worker's RPC reactions and its KV arrival poller share. Plain pointers
// into objects the DecodeWorker owns and outlives them with.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "common/engine/engine.h"
#include "decode_worker/reservation_table.h"
#include "kv_transfer/kv_transfer.h"
#include "tandem/internal/v1/worker.pb.h"

namespace tandem {

class DecodeContext {
 public:
  DecodeContext(Engine& engine, KvReceiver& receiver, ReservationTable& table)
      : engine(engine), receiver(receiver), table(table) {}

  Engine& engine;
  KvReceiver& receiver;
  ReservationTable& table;
  std::atomic<bool> draining{false};

  internal::v1::WorkerIdentity identity() const {
    std::lock_guard<std::mutex> lock(identity_mu_);
    return identity_;
  }
  void set_identity(internal::v1::WorkerIdentity identity) {
    std::lock_guard<std::mutex> lock(identity_mu_);
    identity_ = std::move(identity);
  }

  // Hands a request whose call and KV are both here to the engine; a refusal ends its
  // stream with the error and frees the reservation.
  void StartDecode(ReadyToDecode ready);
  // Frees everything engine id `id` holds: the receiver stops writing first, then the
  // engine frees the blocks; a call still parked on the reservation ends with `reason`.
  void Release(const std::string& id, const absl::Status& reason);

 private:
  mutable std::mutex identity_mu_;
  internal::v1::WorkerIdentity identity_;  // guarded by identity_mu_
};

// Ends a stream through its sink, as the engine would: one kAbort output with `status`.
void FailStream(OutputSink& sink, const std::string& id, absl::Status status);

}  // namespace tandem
