// The first half of the chain: stages that reshape logits from the request's history.
//
// Each stage runs over a batch `logits` [num_rows][vocab_size] in place, one row per
// SamplingRow, and skips rows whose params do not use it without touching them. Order
// (DESIGN.md §7): bias and bans -> min_tokens -> penalties -> no-repeat-ngram. Banned
// tokens become -inf. Beam search runs these same stages on log-probs (as Hugging Face
// does), so none of them assumes the row is unnormalised.
#pragma once

#include <cstdint>
#include <span>

#include "absl/functional/function_ref.h"
#include "common/sampling/sequence_state.h"

namespace tandem {

// allowed_token_ids (everything else -inf), then logit_bias (added), then bad_token_ids.
void ApplyBiasAndBans(std::span<float> logits, const SamplingContext& ctx,
                      std::span<const SamplingRow> rows);

// While fewer than min_tokens were generated: bans stop_token_ids and the EOS ids (the
// latter unless ignore_eos).
void ApplyMinTokens(std::span<float> logits, const SamplingContext& ctx,
                    std::span<const SamplingRow> rows);

// repetition_penalty (HF: each distinct id of prompt + output, logit < 0 multiplied, else
// divided), then presence/frequency penalties (OpenAI: over output ids,
// logit -= count * frequency + (count > 0) * presence).
void ApplyPenalties(std::span<float> logits, const SamplingContext& ctx,
                    std::span<const SamplingRow> rows);

// HF NoRepeatNGram over prompt + output: bans every token that would complete an n-gram
// already present.
void ApplyNoRepeatNgram(std::span<float> logits, const SamplingContext& ctx,
                        std::span<const SamplingRow> rows);

// The bans of HF NoRepeatNGram for one sequence: calls `ban(token)` for tokens[i + n - 1]
// wherever tokens[i, i + n - 1) of prompt + output equals the last n - 1 tokens (a token may
// be reported more than once). Shared by the CPU stack and the GPU sampler's host side.
void ForEachRepeatedNgramBan(const SequenceSamplingState& state, size_t n,
                             absl::FunctionRef<void(int32_t)> ban);

// All four, in order.
void ApplyLogitsProcessors(std::span<float> logits, const SamplingContext& ctx,
                           std::span<const SamplingRow> rows);

}  // namespace tandem
