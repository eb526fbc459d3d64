// Status helpers shared by every tandem library.
//
// absl::Status / absl::StatusOr are used wherever the outside world can fail us (files,
// network, peers, user input). These macros keep the happy path readable.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TANDEM_CONCAT_INNER_(a, b) a##b
#define TANDEM_CONCAT_(a, b) TANDEM_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define TANDEM_RETURN_IF_ERROR(expr)                   \
  do {                                                 \
    if (absl::Status tandem_status_ = (expr); !tandem_status_.ok()) { \
      return tandem_status_;                           \
    }                                                  \
  } while (false)

// `TANDEM_ASSIGN_OR_RETURN(auto x, MaybeX());` declares or assigns `x` from a StatusOr,
// returning its status from the enclosing function on error.
#define TANDEM_ASSIGN_OR_RETURN(lhs, rexpr) \
  TANDEM_ASSIGN_OR_RETURN_IMPL_(TANDEM_CONCAT_(tandem_statusor_, __LINE__), lhs, rexpr)

#define TANDEM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = *std::move(statusor)
