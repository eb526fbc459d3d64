// Registers a worker with the router (Registry.Register) on a background thread, retrying
// with jittered exponential backoff until it succeeds or Stop. Without --router the router
// finds workers by polling GetLoad, so this is optional.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "tandem/internal/v1/worker.pb.h"

namespace tandem {

class RouterRegistration {
 public:
  RouterRegistration(std::string router_address, internal::v1::WorkerIdentity identity);
  ~RouterRegistration();  // Stop()
  void Stop();

 private:
  void Loop();

  const std::string router_address_;
  const internal::v1::WorkerIdentity identity_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace tandem
