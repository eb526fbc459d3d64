// The router's configuration: one plain struct filled from flags (router/main.cc) or by
// tests, and one validation that names the flag at fault.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "router/retry_policy.h"
#include "router/routing_policy.h"

namespace tandem::router {

struct RouterOptions {
  std::string model_dir;                   // tokenizer.json + config.json
  std::string listen = "127.0.0.1:8000";   // host:port; port 0 picks a free one
  std::string ready_file;                  // written once SERVING (empty: none)
  std::vector<std::string> prefill_addresses;  // static prefill workers (host:port)
  std::vector<std::string> decode_addresses;   // static decode workers (host:port)
  PolicyKind prefill_policy = PolicyKind::kPrefixAffinity;
  PolicyKind decode_policy = PolicyKind::kLeastLoad;
  int32_t max_inflight = 256;               // requests running at once
  int32_t max_queue = 1024;                 // requests waiting for a slot
  RetryOptions retry;                       // max_attempts and backoff
  absl::Duration request_timeout = absl::Minutes(5);  // deadline when the client sets none
  absl::Duration drain_timeout = absl::Seconds(30);   // SIGTERM: in-flight get this long
  absl::Duration poll_interval = absl::Milliseconds(250);  // GetLoad period
  absl::Duration poll_timeout = absl::Seconds(1);          // GetLoad deadline
  absl::Duration report_timeout = absl::Seconds(2);        // stale report -> unhealthy
  int32_t kv_block_size_tokens = 16;        // the workers' block size (prefix hashes)
  int32_t max_receive_message_bytes = 4 << 20;  // larger requests: RESOURCE_EXHAUSTED
};

// OK, or InvalidArgument naming the flag, e.g. "--max_inflight must be >= 1, got 0".
absl::Status ValidateRouterOptions(const RouterOptions& options);

// Splits "a:1,b:2" and checks each entry is host:port with a port in [1, 65535] (port 0 is
// allowed only for --listen). An empty value is an empty list.
absl::StatusOr<std::vector<std::string>> ParseAddressList(std::string_view flag,
                                                          std::string_view value);

// host:port with a port in [min_port, 65535]; InvalidArgument naming `flag` otherwise.
absl::Status ValidateAddress(std::string_view flag, std::string_view address, int min_port);

}  // namespace tandem::router
