// The engine's private record of one request. Only the engine thread touches it.
#pragma once

#include <optional>
#include <vector>

#include "common/engine/engine.h"

namespace tandem {

struct Engine::Record {
  enum class Phase {
    kActive,    // queued or running in the scheduler
    kHeld,      // prefill role: done computing, KV blocks pinned until ReleaseHold
    kReserved,  // decode role: blocks reserved, waiting for StartDecode
  };

  EngineRequest request;
  Phase phase = Phase::kActive;
  SequenceGroup group;              // live sequences; finished ones are swept after a step
  std::optional<BeamSearch> beams;
  bool needs_fork = false;          // n > 1: the root's first logits fan out into n samples
  absl::Time arrival;
  std::optional<absl::Time> first_scheduled;
  std::optional<absl::Time> first_token;
  std::vector<BlockId> held_blocks;  // pinned since the KV hand-off (prefill role)
  absl::Time lease_deadline = absl::InfiniteFuture();  // kReserved
  int64_t reserved_tokens = 0;                         // kReserved
  int64_t max_total_tokens = 0;     // prompt + outputs the context allows
};

}  // namespace tandem
