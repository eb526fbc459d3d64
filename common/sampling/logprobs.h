// Log-probabilities reported to users, and the log-softmax beam search consumes.
//
// Which distribution: the sampler takes a snapshot after penalties and temperature and
// before top-k/top-p/min-p truncation (vLLM's "processed_logprobs"), so alternatives that
// truncation removed still get a finite logprob. Greedy rows use temperature 1. Truncation
// only sets entries to -inf, so the chosen token's value is the same before and after and
// its logprob is value - log_normalizer of the snapshot.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace tandem {

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

// One sampled token's logprobs.
struct SampledLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // descending logprob, lower id first on ties
};

// The snapshot of one row: its log-sum-exp and its top-N.
struct RowLogprobs {
  double log_normalizer = 0.0;  // log(sum(exp(row)))
  std::vector<TokenLogprob> top;
};

// log_normalizer of `row` and its `top_n` most likely tokens (top_n may exceed the row).
RowLogprobs ComputeRowLogprobs(std::span<const float> row, int32_t top_n);

// row -= logsumexp(row), in double: Hugging Face's log_softmax before beam search.
void LogSoftmaxInPlace(std::span<float> row);

}  // namespace tandem
