// What goes into and comes out of the engine. Plain data; callers on any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/kv_cache/block_ids.h"
#include "common/kv_cache/kv_layer_progress.h"
#include "common/sampling/logprobs.h"
#include "common/sampling/sampling_params.h"

namespace tandem {

// One engine, three roles (DESIGN.md §1): colocated runs whole requests; prefill-only
// computes the prompt, samples the first token and hands the KV blocks over; decode-only
// reserves blocks, waits for KV computed elsewhere, then decodes.
enum class EngineRole { kColocated, kPrefillOnly, kDecodeOnly };

enum class OutputFinish { kNone, kStop, kLength, kAbort };

struct EngineOutput {
  std::string request_id;
  int32_t index = 0;                   // output index (n > 1 samples, beams)
  std::vector<int32_t> token_ids;      // new this step
  std::string text;                    // new this step; never half a UTF-8 character
  std::vector<SampledLogprobs> logprobs;  // one per new token, when asked
  OutputFinish finish = OutputFinish::kNone;
  std::string stop;                    // the stop string or id that matched
  absl::Status status;                 // non-OK when finished by an error or abort
  float score = 0.0f;                  // beam score (beam search)
  // Set on the output that finishes an index:
  int64_t num_prompt_tokens = 0;
  int64_t num_cached_tokens = 0;
  int64_t num_output_tokens = 0;
  uint64_t seed = 0;
  absl::Duration queue_time;           // arrival -> first scheduled
  absl::Duration first_token_time;     // arrival -> first token
  // Prefill role: the prompt's KV, handed off *before* the forward pass that finishes it
  // (so the transfer can stream it as layers are written): `kv_progress` tracks that pass.
  // The blocks stay pinned for the caller until it calls Engine::ReleaseHold(request_id),
  // whatever happens to the request after. The first token comes in the next output (no
  // kv_blocks; token_ids empty for n > 1 and beams, which the decode worker fans out), or
  // an abort output if the pass failed or the request was aborted.
  std::vector<BlockId> kv_blocks;
  int64_t kv_num_tokens = 0;
  std::shared_ptr<KvLayerProgress> kv_progress;
};

// Receives a request's outputs, in order, on the engine thread. Must not block: queue and
// return (a gRPC reactor starts its next write, a test pushes into a vector).
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void OnOutput(EngineOutput output) = 0;
};

struct EngineRequest {
  std::string request_id;              // unique among the engine's live requests
  std::vector<int32_t> prompt_ids;
  // Tokens generated before (a migrated stream): the continuation follows them and they
  // are not streamed again. Their KV is computed like the prompt's.
  std::vector<int32_t> generated_ids;
  SamplingParams params;
  uint64_t seed = 0;                   // resolved (unseeded requests draw one upstream)
  bool skip_special_tokens = true;
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<OutputSink> sink;
  // Decode role: prompt tokens the prefill worker reused from its prefix cache (usage).
  int64_t prefill_cached_tokens = 0;
};

// Decode role: the answer to Engine::Reserve, delivered on the engine thread.
struct Reservation {
  absl::Status status;                 // RESOURCE_EXHAUSTED when the blocks do not fit
  std::vector<BlockId> blocks;
};
using ReserveCallback = std::function<void(Reservation)>;

// What the engine reports about itself (load reports, metrics). Copied out under a lock.
struct EngineStats {
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_reserved = 0;
  int32_t num_blocks_free = 0;
  int32_t num_blocks_total = 0;
  int64_t prefix_cache_query_tokens = 0;
  int64_t prefix_cache_hit_tokens = 0;
  int64_t num_steps = 0;
  int64_t num_preemptions = 0;
  int64_t num_computed_tokens = 0;     // tokens through the model, all steps
  int64_t num_pipelined_steps = 0;     // passes launched before the previous step's tokens
  // Prefix-cache summary (BlockManager::CachedBlockHashes), refreshed every few steps.
  std::vector<uint64_t> cached_block_hashes;
};

}  // namespace tandem
