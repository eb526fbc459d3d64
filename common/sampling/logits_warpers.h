// The second half of the chain: stages that reshape the distribution a draw picks from.
//
// Same contract as logits_processors.h: batch [num_rows][vocab_size] in place, rows that do
// not use a stage are skipped untouched, filtered tokens become -inf. Greedy rows
// (temperature 0) skip every warper: none of them can change the argmax. Order:
// temperature -> top-k -> top-p -> min-p. Each matches Hugging Face's warper of the same
// name with min_tokens_to_keep = 1 (see docs/sampling.md).
#pragma once

#include <span>

#include "common/sampling/sequence_state.h"

namespace tandem {

// logits /= temperature.
void ApplyTemperature(std::span<float> logits, const SamplingContext& ctx,
                      std::span<const SamplingRow> rows);

// Keeps tokens whose logit is >= the k-th largest (ties at the boundary are all kept).
void ApplyTopK(std::span<float> logits, const SamplingContext& ctx,
               std::span<const SamplingRow> rows);

// Sorting ascending, removes tokens whose cumulative probability from the least likely up
// is <= 1 - top_p; the most likely token is always kept.
void ApplyTopP(std::span<float> logits, const SamplingContext& ctx,
               std::span<const SamplingRow> rows);

// Removes tokens with probability < min_p * (probability of the most likely token).
void ApplyMinP(std::span<float> logits, const SamplingContext& ctx,
               std::span<const SamplingRow> rows);

// All four, in order.
void ApplyLogitsWarpers(std::span<float> logits, const SamplingContext& ctx,
                        std::span<const SamplingRow> rows);

}  // namespace tandem
