// When and how soon the router tries again after a worker failed a request.
//
// Jittered exponential backoff ("full jitter" on the upper half): retry k (k >= 1) waits
// uniformly in [d/2, d] with d = min(initial * multiplier^(k-1), max). Pure functions; the
// caller supplies the uniform draw, so tests are deterministic.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"

namespace tandem::router {

struct RetryOptions {
  int32_t max_attempts = 3;  // worker attempts per request without progress (>= 1)
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(1);
  double multiplier = 2.0;
};

absl::Status ValidateRetryOptions(const RetryOptions& options);

// Delay before retry number `retry` (1-based); `uniform01` is a draw in [0, 1).
absl::Duration BackoffDelay(const RetryOptions& options, int32_t retry, double uniform01);

// What the router does with a worker call's failure.
enum class FailureKind {
  kRetry,          // the worker died or could not take it: try another (UNAVAILABLE, ...)
  kNoCapacity,     // RESOURCE_EXHAUSTED from Reserve: try the next worker, then wait
  kDeadline,       // the request's deadline passed: give up with DEADLINE_EXCEEDED
  kFatal,          // the request itself is bad: relay the status to the client
};

FailureKind ClassifyWorkerFailure(grpc::StatusCode code);

// The code a client sees for a worker's final failure: never UNKNOWN (DESIGN.md §8).
grpc::StatusCode ClientCodeFor(grpc::StatusCode worker_code);

}  // namespace tandem::router
