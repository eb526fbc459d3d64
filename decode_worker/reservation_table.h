// The decode worker's book of requests it holds: reservations waiting for their KV and/or
// their Decode call, and streams running in the engine. A request starts decoding when
// BOTH its Decode call and its KV arrival are present (docs/protocol.md step 9); whichever
// comes second hands the other's half to the caller, who calls Engine::StartDecode.
//
// Keys are engine request ids: the reservation id for a reserved request, the request id
// for a colocated one. Thread-safe (one mutex, never held while calling out).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/engine/engine_types.h"
#include "kv_transfer/kv_transfer.h"

namespace tandem {

struct ReservationInfo {
  std::string request_id;
  int64_t num_tokens = 0;   // tokens of KV reserved
  int32_t num_blocks = 0;
  absl::Time lease_deadline;
};

// Both halves of a reserved request, ready for Engine::StartDecode.
struct ReadyToDecode {
  EngineRequest request;
  KvArrival arrival;
};

class ReservationTable {
 public:
  void AddReservation(const std::string& id, ReservationInfo info);
  // A colocated request (no KV to wait for): tracked for Abort and drain.
  absl::Status AddColocated(const std::string& request_id);

  // The Decode call of reservation `id`. NOT_FOUND (unknown or expired), ALREADY_EXISTS (a
  // call is attached), FAILED_PRECONDITION (another request, or a token count that does not
  // match the reserved KV); otherwise the request is parked, or returned when its KV is
  // already here.
  absl::StatusOr<std::optional<ReadyToDecode>> AttachCall(const std::string& id,
                                                          EngineRequest request);

  // What the arrival poller does with one KV arrival.
  struct ArrivalOutcome {
    std::optional<ReadyToDecode> ready;      // start it
    std::shared_ptr<OutputSink> failed_sink;  // fail this stream (the KV never came)
    bool failed = false;                      // free the reservation in the engine
  };
  ArrivalOutcome OnArrival(KvArrival arrival);

  // Forgets `id` unless it already runs in the engine (then the engine's abort output ends
  // its stream). Returns the sink of a parked call, which the caller must fail itself.
  std::shared_ptr<OutputSink> TakeUnstarted(const std::string& id);
  // Forgets `id` (its stream ended). Idempotent.
  void Remove(const std::string& id);
  // Engine ids held for `request_id` (Abort by request id).
  std::vector<std::string> IdsOf(const std::string& request_id) const;
  // Drops reservations whose Decode call never came, `grace` after their lease.
  std::vector<std::string> SweepAbandoned(absl::Time now, absl::Duration grace);

  size_t size() const;
  int32_t num_reserved_blocks() const;  // blocks of reservations not yet decoding

 private:
  struct Entry {
    ReservationInfo info;
    bool colocated = false;
    bool started = false;                  // handed to the engine
    std::optional<KvArrival> arrival;      // KV complete, waiting for the call
    std::optional<EngineRequest> request;  // call attached, waiting for the KV
  };

  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;  // guarded by mu_
};

}  // namespace tandem
