#include "common/sampling/sampler.h"

#include "common/logging.h"
#include "common/sampling/logits_processors.h"
#include "common/sampling/logits_warpers.h"
#include "common/sampling/selection.h"

namespace tandem {
namespace {

// Snapshots the rows that asked for logprobs (after temperature, before truncation).
std::vector<std::optional<RowLogprobs>> SnapshotLogprobs(std::span<const float> logits,
                                                         const SamplingContext& ctx,
                                                         std::span<const SamplingRow> rows) {
  std::vector<std::optional<RowLogprobs>> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::optional<int32_t>& top_n = rows[i].params->logprobs;
    if (!top_n) continue;
    out[i] = ComputeRowLogprobs(logits.subspan(i * ctx.vocab_size, ctx.vocab_size), *top_n);
  }
  return out;
}

int32_t Select(std::span<const float> row, const SamplingRow& r) {
  if (r.params->greedy()) return ArgMax(row);
  return DrawFromLogits(row, UniformForPosition(r.state->seed, r.state->next_position()));
}

}  // namespace

std::vector<SampledToken> SampleBatch(std::span<float> logits, const SamplingContext& ctx,
                                      std::span<const SamplingRow> rows) {
  for (const SamplingRow& r : rows) TANDEM_CHECK(!r.params->beam_search());
  ApplyLogitsProcessors(logits, ctx, rows);
  ApplyTemperature(logits, ctx, rows);
  std::vector<std::optional<RowLogprobs>> snapshots = SnapshotLogprobs(logits, ctx, rows);
  ApplyTopK(logits, ctx, rows);
  ApplyTopP(logits, ctx, rows);
  ApplyMinP(logits, ctx, rows);
  std::vector<SampledToken> out(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    std::span<const float> row = logits.subspan(i * ctx.vocab_size, ctx.vocab_size);
    out[i].token_id = Select(row, rows[i]);
    if (!snapshots[i]) continue;
    float chosen = static_cast<float>(row[out[i].token_id] - snapshots[i]->log_normalizer);
    out[i].logprobs =
        SampledLogprobs{.chosen = {out[i].token_id, chosen}, .top = std::move(snapshots[i]->top)};
  }
  return out;
}

}  // namespace tandem
