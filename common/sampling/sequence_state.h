// The per-sequence state the sampler stack reads, and the batch it processes.
//
// Plain data owned by the engine (one SequenceSamplingState per running sequence, per beam
// and per n > 1 sample); the sampler reads it and never keeps pointers past a call. Forking
// a beam or a sample is a copy. A CUDA sampler mirrors these fields as device arrays.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "common/sampling/sampling_params.h"

namespace tandem {

struct SequenceSamplingState {
  uint64_t seed = 0;                // resolved seed of this sequence (per sample for n > 1)
  std::vector<int32_t> prompt_ids;  // [num_prompt_tokens]
  std::vector<int32_t> output_ids;  // [num_output_tokens], generated so far
  absl::flat_hash_set<int32_t> prompt_token_set;  // distinct prompt ids (repetition penalty)
  absl::flat_hash_map<int32_t, int32_t> output_token_counts;  // id -> times in output_ids
  std::string held_text;  // stop-string matcher: detokenized text not yet released

  // Index of the token generated next in the whole sequence (prompt + output): the
  // `position` a seeded draw hashes.
  int64_t next_position() const {
    return static_cast<int64_t>(prompt_ids.size() + output_ids.size());
  }
  int64_t num_output_tokens() const { return static_cast<int64_t>(output_ids.size()); }
};

// A fresh state for a prompt.
SequenceSamplingState MakeSequenceState(std::span<const int32_t> prompt_ids, uint64_t seed);

// Records a generated token (the only writer of output_ids / output_token_counts).
void AppendToken(SequenceSamplingState& state, int32_t token);

// The states of n independent samples of one prompt: sample i gets SampleSeed(seed, i).
std::vector<SequenceSamplingState> MakeSampleStates(std::span<const int32_t> prompt_ids,
                                                    uint64_t seed, int32_t n);

// What the whole batch shares.
struct SamplingContext {
  int64_t vocab_size = 0;
  std::span<const int32_t> eos_token_ids;  // the model's EOS ids (generation_config.json)
};

// One row of a batch: that sequence's params and state. Both outlive the call.
struct SamplingRow {
  const SamplingParams* params = nullptr;
  const SequenceSamplingState* state = nullptr;
};

}  // namespace tandem
