// Host-side bf16 conversions (round to nearest even, NaN kept quiet), for weight upload and
// tests. bf16 values are stored as their 16-bit patterns.
#pragma once

#include <bit>
#include <cstdint>
#include <span>

#include "common/model/dtype.h"

namespace tandem {

inline uint16_t FloatToBf16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// The float a bf16 holds (exact).
inline float RoundToBf16(float value) { return BF16ToFloat(FloatToBf16(value)); }

inline void FloatsToBf16(std::span<const float> in, std::span<uint16_t> out) {
  for (size_t i = 0; i < in.size(); ++i) out[i] = FloatToBf16(in[i]);
}

inline void Bf16ToFloats(std::span<const uint16_t> in, std::span<float> out) {
  for (size_t i = 0; i < in.size(); ++i) out[i] = BF16ToFloat(in[i]);
}

}  // namespace tandem
