// Integration-test harness for the workers: one tandem-prefill and one tandem-decode as
// real processes on loopback (free ports, ready files), gRPC stubs to both, and the steps
// a router takes (Reserve -> Decode stream -> Prefill) as plain blocking helpers.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/service/child_process.h"
#include "grpcpp/grpcpp.h"
#include "tandem/internal/v1/worker.grpc.pb.h"

namespace tandem::testing {

struct WorkerProcess {
  std::unique_ptr<ChildProcess> process;
  std::string grpc_address;
  std::string kv_address;
  uint64_t incarnation = 0;
};

// Starts `binary` with `--model=<fixture model> --threads=1` plus `extra_flags`, and waits
// for its ready file (at most 30 s).
// A server binary's path: `compiled` (the build tree's), or the file of the same name in
// $TANDEM_BIN_DIR when set (test binaries copied to another machine, e.g. the GPU one).
std::string ServerBinary(const std::string& compiled);

absl::StatusOr<WorkerProcess> StartWorker(const std::string& binary, const std::string& model,
                                          const std::string& name,
                                          const std::vector<std::string>& extra_flags);

// A greedy request (temperature 0, ignore_eos) of `max_tokens` tokens.
internal::v1::DecodeRequest GreedyDecodeRequest(const std::string& request_id,
                                                const std::vector<int32_t>& prompt,
                                                int32_t max_tokens);

// What a Decode stream delivered.
struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> tokens;  // concatenated deltas
  int num_finished = 0;
};

// Reads a Decode stream to its end (or until `stop_after` tokens, then cancels it).
StreamResult ReadStream(grpc::ClientContext& context,
                        grpc::ClientReaderInterface<internal::v1::DecodeEvent>& reader,
                        std::optional<int> cancel_after_tokens = std::nullopt);

class WorkerPair {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerPair>> Start(
      const std::string& model, const std::vector<std::string>& prefill_flags = {},
      const std::vector<std::string>& decode_flags = {});

  WorkerProcess& prefill() { return prefill_; }
  WorkerProcess& decode() { return decode_; }
  internal::v1::PrefillWorker::Stub& prefill_stub() { return *prefill_stub_; }
  internal::v1::DecodeWorker::Stub& decode_stub() { return *decode_stub_; }

  absl::StatusOr<internal::v1::Reservation> Reserve(const std::string& request_id,
                                                    int32_t num_tokens, int32_t lease_ms = 30000);
  grpc::Status Prefill(const internal::v1::PrefillRequest& request,
                       internal::v1::PrefillResponse* response,
                       absl::Duration timeout = absl::Seconds(30));
  // The whole disaggregated path for one greedy request, as the router runs it.
  StreamResult Generate(const std::string& request_id, const std::vector<int32_t>& prompt,
                        int32_t max_tokens);
  // The colocated path: Decode without a reservation.
  StreamResult GenerateColocated(const std::string& request_id,
                                 const std::vector<int32_t>& prompt, int32_t max_tokens);

  // Load reports; the stub's call has a 5 s deadline.
  absl::StatusOr<internal::v1::LoadReport> Load(bool decode);
  // Waits until every KV block of both workers is free; the last reports on failure.
  absl::Status WaitAllBlocksFree(absl::Duration timeout = absl::Seconds(15));

 private:
  WorkerProcess prefill_;
  WorkerProcess decode_;
  std::unique_ptr<internal::v1::PrefillWorker::Stub> prefill_stub_;
  std::unique_ptr<internal::v1::DecodeWorker::Stub> decode_stub_;
};

// The prefill request that pushes `prompt` into `reservation`.
internal::v1::PrefillRequest PrefillFor(const std::string& request_id,
                                        const std::vector<int32_t>& prompt, int32_t max_tokens,
                                        const internal::v1::Reservation& reservation);

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout);

}  // namespace tandem::testing
