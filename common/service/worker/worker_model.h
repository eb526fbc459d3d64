// A worker's model: the runner (--backend=cpu|cuda) inside an Engine of the given role, and
// the view of the runner's KV memory the transfer transport reads or writes. The view points
// into memory the engine owns, so the transport must be destroyed before the engine. The TCP
// transport reads and writes host bytes, so a CUDA worker's KV pool is managed memory
// (host-visible; pages migrate on touch) — correct, not fast: the NCCL transport (issue 7) is
// the GPU path for disaggregated KV.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/service/worker/worker_options.h"
#include "common/kv_cache/kv_cache_view.h"

namespace tandem {

struct WorkerModel {
  std::unique_ptr<Engine> engine;  // not started
  KvCacheView kv_view;
  // Identifies model + KV layout for the transfer handshake and load reports:
  // "<architecture>/<64-bit hash of config.json>/<KvLayout::Describe()>".
  std::string fingerprint;
};

absl::StatusOr<WorkerModel> LoadWorkerModel(const WorkerOptions& options, EngineRole role);

}  // namespace tandem
