#include "common/service/worker/rpc_util.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace tandem {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Time CallDeadline(const grpc::CallbackServerContext& context) {
  std::chrono::system_clock::time_point deadline = context.deadline();
  // gRPC reports "no deadline" as a time point decades away.
  if (deadline >= std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

absl::Status ValidateTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                              int64_t vocab_size, const std::string& field, bool allow_empty) {
  if (ids.empty() && !allow_empty) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must not be empty"));
  }
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] = ", ids[i],
                                                     " is outside the vocabulary [0, ",
                                                     vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

internal::v1::LoadReport MakeLoadReport(const EngineStats& stats,
                                        const internal::v1::WorkerIdentity& identity,
                                        bool draining, int32_t num_reserved_blocks) {
  internal::v1::LoadReport report;
  *report.mutable_worker() = identity;
  report.set_num_blocks_free(stats.num_blocks_free);
  report.set_num_blocks_total(stats.num_blocks_total);
  report.set_num_running(stats.num_running);
  report.set_num_waiting(stats.num_waiting);
  report.set_num_reserved_blocks(num_reserved_blocks);
  report.set_unix_ms(absl::ToUnixMillis(absl::Now()));
  report.set_draining(draining);
  for (uint64_t hash : stats.cached_block_hashes) report.add_cached_block_hashes(hash);
  return report;
}

}  // namespace tandem
