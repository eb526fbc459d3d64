// `tandem bench`: a load generator against a running cluster. Open loop (Poisson or fixed
// rate) or closed loop (fixed concurrency); random or fixed prompt/output lengths. Reports
// TTFT, inter-token latency, TPOT and end-to-end percentiles, throughput, goodput under
// TTFT/TPOT limits, and the status-code breakdown, as a table and as ghz-style JSON.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem::cli {

struct BenchOptions {
  std::string server;
  int32_t num_requests = 100;
  double rate = 0.0;          // requests/s; 0: closed loop at `concurrency`
  bool poisson = true;        // open loop: exponential gaps (false: fixed gaps)
  int32_t concurrency = 8;    // closed loop: in flight; open loop: cap on in flight
  int32_t prompt_len_min = 32, prompt_len_max = 32;
  int32_t output_len_min = 32, output_len_max = 32;
  uint64_t seed = 1;
  double ttft_slo_ms = 1000.0;
  double tpot_slo_ms = 100.0;
  double timeout_s = 120.0;   // per request deadline
};

absl::Status ValidateBenchOptions(const BenchOptions& options);

// Runs the load and returns the ghz-style report; prints the table to `table`.
absl::StatusOr<nlohmann::json> RunBench(const BenchOptions& options, std::ostream& table);

}  // namespace tandem::cli
