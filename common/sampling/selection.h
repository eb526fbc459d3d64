// The last stage of the chain: pick one token from a processed logits row.
//
// Greedy: the argmax (lowest id on ties). Seeded draw: one uniform u from a counter-based
// hash of (seed, position), then the inverse CDF of softmax(row) walked in token-id order
// with double accumulation. The token therefore depends only on (seed, position, processed
// row): never on batch composition or on earlier draws, so a request resumed on another
// worker from its tokens continues identically. Filtered tokens are -inf and have mass 0.
#pragma once

#include <cstdint>
#include <span>

#include "common/sampling/sampling_params.h"

namespace tandem {

// A uniform double in [0, 1) from SplitMix64 of (seed, position).
double UniformForPosition(uint64_t seed, int64_t position);

// The seed of sample `sample_index` of an n > 1 request: sample 0 uses `seed` itself (so
// n = 1 and sample 0 agree); the others a SplitMix64 mix of (seed, index).
uint64_t SampleSeed(uint64_t seed, int32_t sample_index);

// params.seed, or a fresh random one (std::random_device) that the caller reports.
uint64_t ResolveSeed(const SamplingParams& params);

// Index of the largest value; the lowest index on ties.
int32_t ArgMax(std::span<const float> row);

// Inverse-CDF draw from softmax(row) with uniform `u` in [0, 1). The row must have at least
// one finite value.
int32_t DrawFromLogits(std::span<const float> row, double u);

}  // namespace tandem
