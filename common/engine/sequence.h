// A sequence as the engine schedules it, and the group of sequences one request owns.
//
// Ownership: the engine owns groups and sequences. The scheduler owns the fields marked
// (scheduler); the engine loop the ones marked (engine). A request is one group: one
// sequence, or n samples, or num_beams beams that step together (all scheduled or none).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/time/time.h"
#include "common/kv_cache/block_ids.h"
#include "common/sampling/sequence_state.h"
#include "common/sampling/stop_checker.h"

namespace tandem {

enum class SequenceStatus {
  kWaiting,       // in the waiting queue (new, or preempted)
  kRunning,       // in the running batch
  kAwaitingKv,    // decode role: blocks reserved, KV arriving from a prefill worker
  kTransferring,  // prefill role: KV being pushed to a decode worker, blocks pinned
  kFinished,
};

struct Sequence {
  SeqId id = 0;
  int32_t index = 0;               // output index within the request (n > 1, beams)
  std::vector<int32_t> token_ids;  // prompt + generated (engine appends)
  int64_t num_prompt_tokens = 0;
  int64_t num_computed_tokens = 0;  // tokens whose KV is in the cache (scheduler)
  int64_t num_cached_tokens = 0;    // of the prompt, reused from the prefix cache (scheduler)
  SequenceStatus status = SequenceStatus::kWaiting;  // (scheduler, engine for role states)
  SequenceSamplingState sampling;        // penalties, seeds, stop matching (engine)
  std::unique_ptr<StopChecker> stop;     // null for beams: their text is decoded at the end
  bool finished = false;                 // (engine)

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  // Tokens known but not yet in the cache: the prompt remainder, or the last sampled token.
  int64_t num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens; }
};

struct SequenceGroup {
  std::vector<std::unique_ptr<Sequence>> seqs;  // live sequences (beams are replaced in place)
  absl::Time arrival_time;
  int64_t num_preemptions = 0;  // (scheduler)
};

}  // namespace tandem
