#include "common/model/dtype.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(DTypeTest, SafetensorsNamesRoundTrip) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    EXPECT_EQ(ParseSafetensorsDType(DTypeName(dtype)), dtype);
  }
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
}

TEST(DTypeTest, RejectsOtherSafetensorsNames) {
  for (const char* name : {"I64", "F64", "F8_E4M3", "BOOL", "f32", "", "BF16 "}) {
    EXPECT_EQ(ParseSafetensorsDType(name), std::nullopt) << name;
  }
}

TEST(DTypeTest, ParsesTorchDTypes) {
  EXPECT_EQ(ParseTorchDType("float32"), DType::kF32);
  EXPECT_EQ(ParseTorchDType("bfloat16"), DType::kBF16);
  EXPECT_EQ(ParseTorchDType("float16"), DType::kF16);
  EXPECT_EQ(ParseTorchDType("float64"), std::nullopt);
  EXPECT_EQ(ParseTorchDType("BF16"), std::nullopt);
}

TEST(DTypeTest, F16KnownBitPatterns) {
  EXPECT_EQ(F16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(F16ToFloat(0xC100), -2.5f);
  EXPECT_EQ(F16ToFloat(0x7BFF), 65504.0f);         // max normal
  EXPECT_EQ(F16ToFloat(0x0400), 0x1p-14f);         // min normal
  EXPECT_EQ(F16ToFloat(0x0001), 0x1p-24f);         // min subnormal
  EXPECT_EQ(F16ToFloat(0x03FF), 1023 * 0x1p-24f);  // max subnormal
  EXPECT_EQ(F16ToFloat(0x8001), -0x1p-24f);
  EXPECT_EQ(F16ToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(F16ToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7C01)));                          // signalling NaN stays NaN
  EXPECT_EQ(std::bit_cast<uint32_t>(F16ToFloat(0x8000)), 0x80000000u);  // -0
}

TEST(DTypeTest, BF16KnownBitPatterns) {
  EXPECT_EQ(BF16ToFloat(0x3F80), 1.0f);
  EXPECT_EQ(BF16ToFloat(0xC020), -2.5f);
  EXPECT_EQ(BF16ToFloat(0x7F7F), std::bit_cast<float>(0x7F7F0000u));  // max
  EXPECT_EQ(BF16ToFloat(0x0001), 0x1p-133f);                          // min subnormal
  EXPECT_EQ(BF16ToFloat(0x7F80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(BF16ToFloat(0xFF80), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(BF16ToFloat(0x7FC0)));
}

// Every finite half widens to the float that converts back to it (checked via the formula
// value = (-1)^s * 2^(e-15) * (1 + m/1024), or m * 2^-24 when subnormal).
TEST(DTypeTest, F16WideningIsExactForAllFiniteValues) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    uint32_t exponent = (bits >> 10) & 0x1f;
    if (exponent == 0x1f) continue;
    uint32_t mantissa = bits & 0x3ff;
    double magnitude = exponent == 0 ? std::ldexp(mantissa, -24)
                                     : std::ldexp(1024 + mantissa, static_cast<int>(exponent) - 25);
    double expected = (bits & 0x8000) ? -magnitude : magnitude;
    ASSERT_EQ(static_cast<double>(F16ToFloat(static_cast<uint16_t>(bits))), expected) << bits;
  }
}

}  // namespace
}  // namespace tandem
