// Small conversions every worker RPC needs: absl::Status <-> grpc::Status, the call's
// deadline, token-id validation naming the proto field, and load reports.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/engine/engine_types.h"
#include "google/protobuf/repeated_field.h"
#include "grpcpp/grpcpp.h"
#include "tandem/internal/v1/worker.pb.h"

namespace tandem {

grpc::Status ToGrpcStatus(const absl::Status& status);

// The call's deadline; InfiniteFuture when the client set none.
absl::Time CallDeadline(const grpc::CallbackServerContext& context);

// INVALID_ARGUMENT naming `field` (and the index) when empty or an id is outside [0, vocab).
absl::Status ValidateTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                              int64_t vocab_size, const std::string& field, bool allow_empty);

// A load report: the engine's stats, who the worker is, whether it drains.
internal::v1::LoadReport MakeLoadReport(const EngineStats& stats,
                                        const internal::v1::WorkerIdentity& identity,
                                        bool draining, int32_t num_reserved_blocks);

}  // namespace tandem
