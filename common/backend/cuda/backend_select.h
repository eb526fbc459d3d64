// Choosing the model runner at start (`--backend=cpu|cuda --device=N`): one entry point the
// worker binaries and `tandem generate` share. Always compiled; the CUDA runner is linked in
// when the build found nvcc (TANDEM_WITH_CUDA_BACKEND), else --backend=cuda is UNIMPLEMENTED.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/backend/model_runner.h"
#include "common/kv_cache/kv_cache_view.h"

namespace tandem {

enum class BackendKind { kCpu, kCuda };

// "cpu" or "cuda"; anything else is INVALID_ARGUMENT naming --backend.
absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name);
std::string_view BackendKindName(BackendKind kind);
// Whether this build contains the CUDA backend.
bool CudaBackendCompiled();

enum class KvViewKind { kNone, kHost, kDevice };

struct RunnerSelection {
  BackendKind backend = BackendKind::kCpu;
  int device = 0;                    // cuda: device ordinal
  double gpu_memory_fraction = 0.9;  // cuda: share of device memory, when num_kv_blocks == 0
  int64_t num_kv_blocks = 2048;      // cpu: >= 1; cuda: 0 sizes the pool from the fraction
  int64_t block_size_tokens = 16;
  int num_threads = 1;               // cpu: compute threads (0: all)
  int64_t max_num_tokens = 512;      // cuda: token rows per Forward (the engine's step budget)
  int64_t max_num_seqs = 64;         // cuda: sequences per Forward
  // The view of the KV pool a transfer transport needs. kHost: the TCP transport reads and
  // writes host bytes, so a CUDA pool is placed in managed memory. kDevice: the NCCL
  // transport moves device bytes; a CUDA pool stays plain device memory and the view is
  // KvMemory::kCudaDevice (FAILED_PRECONDITION for the CPU backend). kNone: no view for CUDA.
  // The CPU pool is host memory and always has a host view (kDevice is refused).
  KvViewKind kv_view = KvViewKind::kNone;
};

struct SelectedRunner {
  std::unique_ptr<ModelRunner> runner;
  KvCacheView kv_view;  // empty (no layers) unless asked for: RunnerSelection::kv_view
};

// Checks the selection (errors name the flags: --backend, --device, --gpu_memory_fraction,
// --num_kv_blocks) without touching a device.
absl::Status ValidateRunnerSelection(const RunnerSelection& selection);

absl::StatusOr<SelectedRunner> LoadSelectedRunner(const std::string& model_dir,
                                                  const RunnerSelection& selection);

}  // namespace tandem
