#include "router/retry_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace tandem::router {

absl::Status ValidateRetryOptions(const RetryOptions& o) {
  if (o.initial_backoff <= absl::ZeroDuration() || o.max_backoff < o.initial_backoff) {
    return absl::InvalidArgumentError(
        absl::StrCat("backoff must satisfy 0 < initial <= max, got initial ",
                     absl::FormatDuration(o.initial_backoff), " max ",
                     absl::FormatDuration(o.max_backoff)));
  }
  if (!(o.multiplier >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("backoff multiplier must be >= 1, got ", o.multiplier));
  }
  return absl::OkStatus();
}

absl::Duration BackoffDelay(const RetryOptions& o, int32_t retry, double uniform01) {
  int32_t exponent = std::clamp(retry - 1, 0, 62);
  double scale = std::pow(o.multiplier, exponent);
  absl::Duration ceiling = std::min(o.max_backoff, o.initial_backoff * scale);
  double u = std::clamp(uniform01, 0.0, 1.0);
  return ceiling * (0.5 + 0.5 * u);
}

FailureKind ClassifyWorkerFailure(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:  // the peer went away (our own cancels are filtered)
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::INTERNAL:   // e.g. RST_STREAM from a dying peer
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DATA_LOSS:
    case grpc::StatusCode::NOT_FOUND:  // a reservation lost with its worker's restart
      return FailureKind::kRetry;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return FailureKind::kNoCapacity;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return FailureKind::kDeadline;
    case grpc::StatusCode::OK:
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::DO_NOT_USE:
      return FailureKind::kFatal;
  }
  return FailureKind::kFatal;
}

grpc::StatusCode ClientCodeFor(grpc::StatusCode code) {
  switch (ClassifyWorkerFailure(code)) {
    case FailureKind::kRetry:
      return grpc::StatusCode::UNAVAILABLE;
    case FailureKind::kNoCapacity:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case FailureKind::kDeadline:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    case FailureKind::kFatal:
      return code == grpc::StatusCode::OK ? grpc::StatusCode::INTERNAL : code;
  }
  return grpc::StatusCode::INTERNAL;
}

}  // namespace tandem::router
