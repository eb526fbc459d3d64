// A thread that turns the KV receiver's arrivals into decoding: a complete KV whose Decode
// call is attached starts in the engine; a failed or expired one frees the reservation
// (the receiver has already stopped writing it) and ends its call with the error.
#pragma once

#include <atomic>
#include <thread>

#include "decode_worker/decode_context.h"

namespace tandem {

class KvArrivalPoller {
 public:
  explicit KvArrivalPoller(DecodeContext& ctx);
  ~KvArrivalPoller();  // Stop()
  void Stop();         // idempotent

 private:
  void Loop();
  void Handle(KvArrival arrival);

  DecodeContext& ctx_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace tandem
