// The sampler chain of common/sampling as batched kernels (DESIGN.md §7). Reference: the CPU
// stack, SampleBatch in common/sampling/sampler.h; CudaSampler (cuda_sampler.h) builds these
// arguments from SamplingRows and is the only production caller.
//
// Two launches per batch (greedy rows with nothing else to do: LaunchGreedyArgMax alone):
//  1. LaunchApplySamplingEdits: the history- and request-dependent processors (logit_bias,
//     bans, min_tokens, repetition/presence/frequency penalties, no-repeat-ngram,
//     allowed_token_ids) reduced on the host to a sparse list of per-token edits, applied in
//     place to `logits` [num_rows][row_stride] (one thread per edit; rows in allowed mode are
//     first filled with -inf).
//  2. LaunchSampleRows: one block per row, fused: temperature (applied on the fly, the
//     logits are not rewritten) -> logprobs snapshot (log-sum-exp + top-N) -> top-k (radix
//     select of the k-th largest) -> top-p (radix select by probability mass) -> min-p ->
//     greedy argmax or the seeded inverse-CDF draw. Truncation is a predicate on the row,
//     never a sort or a write.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace tandem {

inline constexpr int32_t kSamplingMaxTopLogprobs = 20;  // = kMaxLogprobs

// Flags of one edit; the value is computed as the CPU chain would (see ApplySamplingEdit).
enum SamplingEditFlags : uint32_t {
  kSamplingEditBias = 1u << 0,        // value += bias
  kSamplingEditRepetition = 1u << 1,  // value < 0 ? value * penalty : value / penalty
  kSamplingEditSubtract = 1u << 2,    // value -= subtract (count * frequency + presence)
  kSamplingEditBan = 1u << 3,         // value = -inf (bad ids, min_tokens, ngram, not allowed)
};

// One token of one row; (row, token) pairs are unique within a batch.
struct SamplingEdit {
  int32_t row = 0;
  int32_t token = 0;
  float bias = 0.0f;
  float subtract = 0.0f;
  uint32_t flags = 0;
};

struct SamplingEditArgs {
  float* logits = nullptr;                  // [num_rows][row_stride], edited in place
  int64_t row_stride = 0;                   // floats between rows, >= vocab_size
  int64_t vocab_size = 0;
  int32_t num_rows = 0;
  const SamplingEdit* edits = nullptr;      // [num_edits]
  int64_t num_edits = 0;
  const float* repetition_penalty = nullptr;  // [num_rows]
  const int32_t* allowed_mode = nullptr;    // [num_rows], 1: every token without an edit -> -inf
  bool any_allowed_mode = false;            // host-side: whether to run the fill
  float* edit_values = nullptr;             // [num_edits] scratch (used when any_allowed_mode)
};

// Per-row parameters of the fused kernel, already resolved by the host.
struct SamplingRowParams {
  int32_t skip = 0;         // 1: the row is sampled elsewhere (CPU fallback); untouched
  int32_t greedy = 0;       // 1: argmax, no warpers (temperature 0)
  float temperature = 1.0f; // applied when !greedy and != 1
  int32_t top_k = 0;        // applied when 0 < top_k < vocab_size
  float top_p = 1.0f;       // applied when < 1
  float min_p = 0.0f;       // applied when > 0
  int32_t logprobs = -1;    // -1: none; else the chosen token's logprob + this many top
  double uniform = 0.0;     // UniformForPosition(seed, position), in [0, 1)
};

// What one row returns. token < 0: the row had no finite logit to draw from.
struct SamplingRowResult {
  int32_t token = 0;
  int32_t num_top = 0;
  float chosen_logprob = 0.0f;
  int32_t pad = 0;
  double log_normalizer = 0.0;
  int32_t top_ids[kSamplingMaxTopLogprobs] = {};
  float top_logprobs[kSamplingMaxTopLogprobs] = {};
};

struct SampleRowsArgs {
  const float* logits = nullptr;           // [num_rows][row_stride], after the edits
  int64_t row_stride = 0;
  int64_t vocab_size = 0;                  // [1, kSamplingMaxVocab]
  int32_t num_rows = 0;
  const SamplingRowParams* params = nullptr;  // [num_rows]
  SamplingRowResult* results = nullptr;       // [num_rows]
};

// Greedy rows without logprobs (and nothing to edit): the argmax alone, spread over
// kGreedyArgMaxBlocks blocks per row (a row is 0.5 MB at a 128k vocabulary: one block of the
// fused kernel reads it in ~8 dependent round trips, these in one). Each block writes its
// chunk's (value, lowest index) to the scratch; the row's last block to finish (an atomic
// ticket) reduces them and writes results[r].token (and num_top = 0), exactly
// LaunchSampleRows' greedy result, and returns the row's counter to 0.
inline constexpr int32_t kGreedyArgMaxBlocks = 32;

struct GreedyArgMaxArgs {
  const float* logits = nullptr;     // [num_rows][row_stride]
  int64_t row_stride = 0;
  int64_t vocab_size = 0;            // [1, kSamplingMaxVocab]
  int32_t num_rows = 0;
  SamplingRowResult* results = nullptr;  // [num_rows]
  float* partial_values = nullptr;       // [num_rows][kGreedyArgMaxBlocks] scratch
  int32_t* partial_indices = nullptr;    // [num_rows][kGreedyArgMaxBlocks] scratch
  uint32_t* counters = nullptr;          // [num_rows], zero before and after
};

// The fixed-point mass of top-p needs vocab_size * 2^scale_bits < 2^63; 2^24 keeps at
// least 2^38 of resolution per token.
inline constexpr int64_t kSamplingMaxVocab = int64_t{1} << 24;

// INVALID_ARGUMENT on bad shapes or null pointers.
absl::Status LaunchApplySamplingEdits(const SamplingEditArgs& args, cudaStream_t stream);
absl::Status LaunchSampleRows(const SampleRowsArgs& args, cudaStream_t stream);
absl::Status LaunchGreedyArgMax(const GreedyArgMaxArgs& args, cudaStream_t stream);

}  // namespace tandem
