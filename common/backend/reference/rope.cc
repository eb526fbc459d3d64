#include "common/backend/reference/rope.h"

#include <cmath>
#include <numbers>

#include "common/logging.h"

namespace tandem::reference {
namespace {

// Llama 3.1: long wavelengths are divided by `factor`, short ones kept, the band between
// interpolated smoothly.
float Llama3Scale(float inv_freq, const RopeScaling& s) {
  float old_context = static_cast<float>(s.original_max_position_embeddings);
  float low_freq_wavelen = old_context / s.low_freq_factor;
  float high_freq_wavelen = old_context / s.high_freq_factor;
  float wavelen = 2.0f * std::numbers::pi_v<float> / inv_freq;
  if (wavelen < high_freq_wavelen) return inv_freq;
  if (wavelen > low_freq_wavelen) return inv_freq / s.factor;
  float smooth = (old_context / wavelen - s.low_freq_factor) /
                 (s.high_freq_factor - s.low_freq_factor);
  return (1.0f - smooth) * inv_freq / s.factor + smooth * inv_freq;
}

}  // namespace

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  int64_t half = config.head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(config.head_dim);
    inv_freq[i] = 1.0f / std::pow(config.rope_theta, exponent);
    switch (config.rope_scaling.type) {
      case RopeScaling::Type::kNone:
        break;
      case RopeScaling::Type::kLlama3:
        inv_freq[i] = Llama3Scale(inv_freq[i], config.rope_scaling);
        break;
    }
  }
  return inv_freq;
}

void ApplyRope(std::span<float> x, int64_t num_heads, int64_t head_dim,
               std::span<const int32_t> positions, std::span<const float> inv_freq) {
  int64_t half = head_dim / 2;
  TANDEM_CHECK(static_cast<int64_t>(inv_freq.size()) == half);
  TANDEM_CHECK(x.size() == positions.size() * num_heads * head_dim);
  std::vector<float> cos_values(half), sin_values(half);
  for (size_t t = 0; t < positions.size(); ++t) {
    for (int64_t i = 0; i < half; ++i) {
      float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_values[i] = std::cos(angle);
      sin_values[i] = std::sin(angle);
    }
    for (int64_t h = 0; h < num_heads; ++h) {
      float* v = x.data() + (t * num_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_values[i] - b * sin_values[i];
        v[i + half] = b * cos_values[i] + a * sin_values[i];
      }
    }
  }
}

}  // namespace tandem::reference
