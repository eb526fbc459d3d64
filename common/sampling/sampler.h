// Token selection for one sequence's logits row.
//
// Order: temperature -> top-k -> top-p -> greedy or seeded draw. A seeded draw depends only
// on (seed, position, processed distribution): never on batch composition, so a request
// resumed elsewhere from its tokens continues identically.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/sampling/sampling_params.h"

namespace tandem {

// A uniform double in [0, 1) from a counter-based hash of (seed, position).
double UniformForPosition(uint64_t seed, int64_t position);

// Picks the next token. `position` is the index of the token being generated in the whole
// sequence (prompt + output). `scratch` is reused across calls to avoid allocation.
int32_t SampleToken(std::span<const float> logits, const SamplingParams& params, uint64_t seed,
                    int64_t position, std::vector<std::pair<float, int32_t>>& scratch);

}  // namespace tandem
