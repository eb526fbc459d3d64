// The CLI's gRPC client side: streaming a completion from a running cluster, and waiting
// until a router reports enough healthy workers.
#pragma once

#include <memory>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sampling/sampling_params.h"
#include "tandem/v1/tandem.grpc.pb.h"

namespace tandem::cli {

std::unique_ptr<v1::Tandem::Stub> MakeStub(const std::string& server);

struct RemoteGenerateOptions {
  std::string server;
  std::string prompt;
  SamplingParams sampling;
  absl::Duration timeout = absl::Minutes(5);
};

// Streams the completion to `out`; returns the final `finished` message of output 0.
absl::StatusOr<v1::Finished> RemoteGenerate(const RemoteGenerateOptions& options,
                                            std::ostream& out);

// Polls ModelInfo until the router sees at least the given healthy worker counts.
absl::Status WaitForCluster(const std::string& server, int num_prefill, int num_decode,
                            absl::Duration timeout);

}  // namespace tandem::cli
