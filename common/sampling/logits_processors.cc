#include "common/sampling/logits_processors.h"

#include <cmath>
#include <vector>

#include "common/logging.h"

namespace tandem {
namespace {

std::span<float> RowOf(std::span<float> logits, const SamplingContext& ctx, size_t i) {
  return logits.subspan(i * ctx.vocab_size, ctx.vocab_size);
}

void CheckShape(std::span<float> logits, const SamplingContext& ctx,
                std::span<const SamplingRow> rows) {
  TANDEM_CHECK(logits.size() == rows.size() * static_cast<size_t>(ctx.vocab_size))
      << "logits has " << logits.size() << " values for " << rows.size() << " rows of "
      << ctx.vocab_size;
}

void KeepOnlyAllowed(std::span<float> row, const std::vector<int32_t>& allowed) {
  std::vector<float> kept(allowed.size());
  for (size_t i = 0; i < allowed.size(); ++i) kept[i] = row[allowed[i]];
  std::fill(row.begin(), row.end(), -INFINITY);
  for (size_t i = 0; i < allowed.size(); ++i) row[allowed[i]] = kept[i];
}

float Penalize(float logit, float penalty) {
  return logit < 0.0f ? logit * penalty : logit / penalty;
}

void RepetitionPenalty(std::span<float> row, const SequenceSamplingState& s, float penalty) {
  for (int32_t id : s.prompt_token_set) row[id] = Penalize(row[id], penalty);
  for (const auto& [id, count] : s.output_token_counts) {
    if (!s.prompt_token_set.contains(id)) row[id] = Penalize(row[id], penalty);
  }
}

// The token at `index` of prompt + output.
int32_t TokenAt(const SequenceSamplingState& s, size_t index) {
  return index < s.prompt_ids.size() ? s.prompt_ids[index]
                                     : s.output_ids[index - s.prompt_ids.size()];
}

}  // namespace

void ApplyBiasAndBans(std::span<float> logits, const SamplingContext& ctx,
                      std::span<const SamplingRow> rows) {
  CheckShape(logits, ctx, rows);
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingParams& p = *rows[i].params;
    if (p.allowed_token_ids.empty() && p.logit_bias.empty() && p.bad_token_ids.empty()) continue;
    std::span<float> row = RowOf(logits, ctx, i);
    if (!p.allowed_token_ids.empty()) KeepOnlyAllowed(row, p.allowed_token_ids);
    for (const auto& [id, bias] : p.logit_bias) row[id] += bias;
    for (int32_t id : p.bad_token_ids) row[id] = -INFINITY;
  }
}

void ApplyMinTokens(std::span<float> logits, const SamplingContext& ctx,
                    std::span<const SamplingRow> rows) {
  CheckShape(logits, ctx, rows);
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingParams& p = *rows[i].params;
    if (rows[i].state->num_output_tokens() >= p.min_tokens) continue;
    std::span<float> row = RowOf(logits, ctx, i);
    for (int32_t id : p.stop_token_ids) row[id] = -INFINITY;
    if (p.ignore_eos) continue;
    for (int32_t id : ctx.eos_token_ids) row[id] = -INFINITY;
  }
}

void ApplyPenalties(std::span<float> logits, const SamplingContext& ctx,
                    std::span<const SamplingRow> rows) {
  CheckShape(logits, ctx, rows);
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingParams& p = *rows[i].params;
    const SequenceSamplingState& s = *rows[i].state;
    std::span<float> row = RowOf(logits, ctx, i);
    if (p.repetition_penalty != 1.0f) RepetitionPenalty(row, s, p.repetition_penalty);
    if (p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) continue;
    for (const auto& [id, count] : s.output_token_counts) {
      row[id] -= static_cast<float>(count) * p.frequency_penalty + p.presence_penalty;
    }
  }
}

void ApplyNoRepeatNgram(std::span<float> logits, const SamplingContext& ctx,
                        std::span<const SamplingRow> rows) {
  CheckShape(logits, ctx, rows);
  for (size_t i = 0; i < rows.size(); ++i) {
    int32_t n = rows[i].params->no_repeat_ngram_size;
    if (n == 0) continue;
    std::span<float> row = RowOf(logits, ctx, i);
    ForEachRepeatedNgramBan(*rows[i].state, static_cast<size_t>(n),
                            [&](int32_t token) { row[token] = -INFINITY; });
  }
}

void ApplyLogitsProcessors(std::span<float> logits, const SamplingContext& ctx,
                           std::span<const SamplingRow> rows) {
  ApplyBiasAndBans(logits, ctx, rows);
  ApplyMinTokens(logits, ctx, rows);
  ApplyPenalties(logits, ctx, rows);
  ApplyNoRepeatNgram(logits, ctx, rows);
}

void ForEachRepeatedNgramBan(const SequenceSamplingState& s, size_t n,
                             absl::FunctionRef<void(int32_t)> ban) {
  size_t length = s.prompt_ids.size() + s.output_ids.size();
  if (length + 1 < n) return;
  size_t suffix_start = length + 1 - n;
  for (size_t i = 0; i + n <= length; ++i) {
    bool match = true;
    for (size_t j = 0; j + 1 < n && match; ++j) {
      match = TokenAt(s, i + j) == TokenAt(s, suffix_start + j);
    }
    if (match) ban(TokenAt(s, i + n - 1));
  }
}

}  // namespace tandem
