#include "common/service/worker/worker_options.h"

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/backend/cuda/backend_select.h"
#include "common/engine/engine.h"
#include "kv_transfer/transport_select.h"

namespace tandem {
namespace {

absl::Status OutOfRange(const std::string& flag, const std::string& range, int64_t value) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, " must be ", range, ", got ", value));
}

absl::Status ValidateModelDir(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("--model must name a model directory");
  std::error_code error;
  if (!std::filesystem::is_regular_file(std::filesystem::path(dir) / "config.json", error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model ", dir, " is not a model directory (no config.json)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<HostPort> ParseHostPort(const std::string& value, const std::string& flag) {
  size_t colon = value.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be host:port, got \"", value, "\""));
  }
  int port = -1;
  if (!absl::SimpleAtoi(value.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " port must be a number in [0, 65535], got \"", value.substr(colon + 1), "\""));
  }
  return HostPort{.host = value.substr(0, colon), .port = port};
}

absl::Status ValidateWorkerOptions(const WorkerOptions& o) {
  if (absl::Status s = ValidateModelDir(o.model_dir); !s.ok()) return s;
  if (auto s = ParseHostPort(o.listen, "listen"); !s.ok()) return s.status();
  if (auto s = ParseHostPort(o.kv_listen, "kv_listen"); !s.ok()) return s.status();
  if (!o.router.empty()) {
    if (auto s = ParseHostPort(o.router, "router"); !s.ok()) return s.status();
  }
  absl::StatusOr<BackendKind> backend = ParseBackendKind(o.backend);
  if (!backend.ok()) return backend.status();
  if (auto t = ResolveKvTransport(o.kv_transport, *backend == BackendKind::kCuda); !t.ok()) {
    return t.status();
  }
  const int64_t min_blocks = *backend == BackendKind::kCuda ? 0 : 1;
  if (o.num_kv_blocks < min_blocks || o.num_kv_blocks > (int64_t{1} << 24)) {
    return OutOfRange("num_kv_blocks",
                      min_blocks == 0 ? "in [0, 16777216] (0: from --gpu_memory_fraction)"
                                      : "in [1, 16777216]",
                      o.num_kv_blocks);
  }
  if (absl::Status s = ValidateRunnerSelection({.backend = *backend,
                                                .device = o.device,
                                                .gpu_memory_fraction = o.gpu_memory_fraction,
                                                .num_kv_blocks = o.num_kv_blocks});
      !s.ok()) {
    return s;
  }
  if (o.block_size != 16 && o.block_size != 32 && o.block_size != 64) {
    return OutOfRange("block_size", "16, 32 or 64", o.block_size);
  }
  if (o.threads < 1 || o.threads > 1024) return OutOfRange("threads", "in [1, 1024]", o.threads);
  if (auto p = ParsePipelineSteps(o.pipeline_steps, "pipeline_steps"); !p.ok()) {
    return p.status();
  }
  if (o.max_num_seqs < 1 || o.max_num_seqs > 65536) {
    return OutOfRange("max_num_seqs", "in [1, 65536]", o.max_num_seqs);
  }
  if (o.max_num_batched_tokens < 1 || o.max_num_batched_tokens > (int64_t{1} << 20)) {
    return OutOfRange("max_num_batched_tokens", "in [1, 1048576]", o.max_num_batched_tokens);
  }
  return absl::OkStatus();
}

}  // namespace tandem
