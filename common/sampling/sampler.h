// The sampler stack's entry point: one token per sequence of a batch of logits.
//
// Runs the documented chain (DESIGN.md §7, docs/sampling.md) on `logits`
// [num_rows][vocab_size] in place: bias and bans -> min_tokens -> penalties ->
// no-repeat-ngram -> temperature -> [logprobs snapshot] -> top-k -> top-p -> min-p ->
// greedy (temperature 0) or a seeded draw at (state.seed, state.next_position()). Each row
// uses only its own params and state, so a row's token never depends on the other rows.
// Called by the engine thread; beam-search rows go through BeamSearch instead.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/sampling/logprobs.h"
#include "common/sampling/sequence_state.h"

namespace tandem {

struct SampledToken {
  int32_t token_id = 0;
  std::optional<SampledLogprobs> logprobs;  // when the row's params ask for logprobs
};

// [num_rows] results, row order. The caller then calls AppendToken on each state.
std::vector<SampledToken> SampleBatch(std::span<float> logits, const SamplingContext& ctx,
                                      std::span<const SamplingRow> rows);

}  // namespace tandem
