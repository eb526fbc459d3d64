// Element types of weight files and their conversion to fp32.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tandem {

// Float dtypes hold weights; I32 holds token ids in fixture files (never a weight).
enum class DType { kF32, kBF16, kF16, kI32 };

// Bytes per element.
constexpr size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
  }
  return 0;
}

// The safetensors spelling: "F32", "BF16", "F16", "I32".
std::string_view DTypeName(DType dtype);
// Parses the safetensors spelling; nullopt for anything else (I64, F64, F8_E4M3, ...).
std::optional<DType> ParseSafetensorsDType(std::string_view name);
// Parses config.json's torch_dtype ("float32", "bfloat16", "float16").
std::optional<DType> ParseTorchDType(std::string_view name);

inline float BF16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

// IEEE half to float, exact for every value including subnormals, inf and NaN.
inline float F16ToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000 | (mantissa << 13));
  if (exponent == 0) {
    if (mantissa == 0) return std::bit_cast<float>(sign);
    // subnormal: value = mantissa * 2^-24
    float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

}  // namespace tandem
