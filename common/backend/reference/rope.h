// Rotary position embedding as Hugging Face Llama applies it (rotate_half: element i pairs
// with i + head_dim/2), including the llama3 frequency scaling.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/model_config.h"

namespace tandem::reference {

// inv_freq[i] = rope_theta^(-2i/head_dim), i < head_dim/2, then rope_scaling applied.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

// Rotates x: [num_tokens][num_heads][head_dim] in place; positions: [num_tokens].
void ApplyRope(std::span<float> x, int64_t num_heads, int64_t head_dim,
               std::span<const int32_t> positions, std::span<const float> inv_freq);

}  // namespace tandem::reference
