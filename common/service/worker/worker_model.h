// A worker's model: the runner (--backend=cpu|cuda) inside an Engine of the given role, the
// KV transport chosen by --kv_transport, and the view of the runner's KV memory that
// transport reads or writes. The view points into memory the engine owns, so the transport
// must be destroyed before the engine. NCCL (the default with --backend=cuda) gets a device
// view of a plain device pool; TCP reads and writes host bytes, so a CUDA worker on TCP has
// its pool in managed memory (host-visible; pages migrate on touch) — correct, not fast.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/service/worker/worker_options.h"
#include "common/kv_cache/kv_cache_view.h"
#include "kv_transfer/transport_select.h"

namespace tandem {

struct WorkerModel {
  std::unique_ptr<Engine> engine;  // not started
  KvCacheView kv_view;
  KvTransportKind kv_transport = KvTransportKind::kTcp;
  // Identifies model + KV layout for the transfer handshake and load reports:
  // "<architecture>/<64-bit hash of config.json>/<KvLayout::Describe()>".
  std::string fingerprint;
};

absl::StatusOr<WorkerModel> LoadWorkerModel(const WorkerOptions& options, EngineRole role);

}  // namespace tandem
