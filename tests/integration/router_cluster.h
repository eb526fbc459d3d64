// A whole cluster for router integration tests: N tandem-prefill + M tandem-decode workers
// and a tandem-router, all real processes on loopback with free ports and ready files.
// Workers can be SIGKILLed and restarted on the same port; every wait has a deadline.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "tandem/internal/v1/worker.grpc.pb.h"
#include "tandem/v1/tandem.grpc.pb.h"
#include "tests/integration/worker_pair.h"

namespace tandem::testing {

struct RouterClusterOptions {
  int num_prefill = 1;
  int num_decode = 1;
  std::string model = "llama3-tiny";
  std::vector<std::string> worker_flags;  // added to every worker
  std::vector<std::string> prefill_flags;  // added to prefill workers, after worker_flags
  std::vector<std::string> decode_flags;   // added to decode workers, after worker_flags
  std::vector<std::string> router_flags;  // added to the router
  // Start the router first without --prefill/--decode; workers join with --router=ADDR
  // (Registry.Register) instead of static addresses.
  bool workers_register = false;
};

// What one GenerateStream call delivered.
struct StreamOutput {
  grpc::Status status;
  std::vector<int32_t> tokens;  // output 0, concatenated deltas
  std::string text;
  int num_finished = 0;
  int num_errors = 0;
  tandem::v1::Finished finished;  // the last one
};

class RouterCluster {
 public:
  static absl::StatusOr<std::unique_ptr<RouterCluster>> Start(RouterClusterOptions options);

  const std::string& router_address() const { return router_address_; }
  tandem::v1::Tandem::Stub& stub() { return *stub_; }
  WorkerProcess& prefill(int i) { return prefill_[static_cast<size_t>(i)]; }
  WorkerProcess& decode(int i) { return decode_[static_cast<size_t>(i)]; }
  ChildProcess& router() { return *router_; }

  // SIGKILLs a worker and starts a new process on the same gRPC port.
  absl::Status RestartDecode(int i);
  absl::Status RestartPrefill(int i);

  // Waits until every live worker reports all KV blocks free (nothing reserved/running).
  absl::Status WaitAllBlocksFree(absl::Duration timeout = absl::Seconds(20));
  // Waits until the router's named health service is SERVING.
  absl::Status WaitServing(absl::Duration timeout = absl::Seconds(15));

  // Reads a whole stream; `on_token(count)` runs after each delta (for kills mid-stream).
  StreamOutput Stream(const tandem::v1::GenerateRequest& request,
                      absl::Duration timeout = absl::Seconds(30),
                      const std::function<void(int)>& on_token = nullptr);

 private:
  absl::StatusOr<WorkerProcess> StartOne(bool prefill, int index, const std::string& listen);
  absl::Status StartWorkers();
  absl::Status StartRouter();

  RouterClusterOptions options_;
  std::vector<WorkerProcess> prefill_;
  std::vector<WorkerProcess> decode_;
  std::unique_ptr<ChildProcess> router_;
  std::string router_address_;
  std::unique_ptr<tandem::v1::Tandem::Stub> stub_;
};

// A greedy token-id request with ignore_eos (a stream of exactly max_tokens tokens).
tandem::v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt, int32_t max_tokens);

}  // namespace tandem::testing
