// gRPC channels and stubs to workers, one channel per address, created on first use and
// kept for the router's lifetime (a restarted worker on the same address reuses it: gRPC
// reconnects). Thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "tandem/internal/v1/worker.grpc.pb.h"

namespace tandem::router {

namespace internal_v1 = ::tandem::internal::v1;

struct WorkerStubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<internal_v1::DecodeWorker::Stub> decode;
  std::unique_ptr<internal_v1::PrefillWorker::Stub> prefill;
};

class WorkerClients {
 public:
  // Never null; the stubs live as long as this object.
  WorkerStubs& Get(const std::string& address);

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<WorkerStubs>> stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem::router
