#include "common/model/safetensors.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/model/safetensors_writer.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using testing::AsBytes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::MakeSafetensors;
using testing::MakeSafetensorsRaw;
using testing::TestTensor;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> ParseImage(const std::string& image) {
  return SafetensorsFile::Parse(AsBytes(image), "t.safetensors");
}

// Expects `image` to be rejected with a message naming the file and containing `parts`.
void ExpectRejected(const std::string& image, std::initializer_list<std::string> parts) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = ParseImage(image);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  std::string message(file.status().message());
  EXPECT_THAT(message, HasSubstr("t.safetensors: "));
  for (const std::string& part : parts) EXPECT_THAT(message, HasSubstr(part));
}

// One F32 tensor "w" with the given shape/offsets spelled out, over `data_bytes` bytes.
std::string OneTensor(const std::string& shape, const std::string& offsets, size_t data_bytes,
                      const std::string& dtype = "F32") {
  return MakeSafetensorsRaw(R"({"w": {"dtype": ")" + dtype + R"(", "shape": )" + shape +
                                R"(, "data_offsets": )" + offsets + "}}",
                            std::string(data_bytes, '\x01'));
}

TEST(SafetensorsTest, ParsesTensorsAndMetadata) {
  std::vector<float> values = {1, 2, 3, 4, 5, 6};
  std::string image =
      MakeSafetensors({{"a", "F32", {2, 3}, testing::F32Bytes(values)},
                       {"empty", "F16", {0, 4}, ""},
                       {"scalar", "F32", {}, testing::F32Bytes(values).substr(0, 4)}},
                      {{"format", "pt"}});
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = ParseImage(image);
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), 3u);
  const TensorView& a = tensors.at("a");
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_THAT(a.shape, ElementsAre(2, 3));
  EXPECT_EQ(a.NumElements(), 6);
  EXPECT_EQ(a.data.size(), 24u);
  EXPECT_EQ(tensors.at("empty").NumElements(), 0);
  EXPECT_EQ(tensors.at("scalar").NumElements(), 1);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
}

TEST(SafetensorsTest, RejectsFileShorterThanLengthPrefix) {
  ExpectRejected("abc", {"file is 3 bytes, shorter than the 8-byte header length"});
  ExpectRejected("", {"file is 0 bytes"});
}

TEST(SafetensorsTest, RejectsHeaderLengthPastEnd) {
  std::string image = MakeSafetensorsRaw("{}", "");
  image[0] = 3;  // header length 3, but only 2 bytes follow
  ExpectRejected(image, {"header length 3 exceeds the 2 bytes after the length prefix"});
  std::string huge(8, '\xff');
  huge += "{}";
  ExpectRejected(huge, {"header length 18446744073709551615 exceeds"});
}

TEST(SafetensorsTest, RejectsHeaderThatIsNotAJsonObject) {
  ExpectRejected(MakeSafetensorsRaw("{\"w\": ", ""), {"header is not valid JSON"});
  ExpectRejected(MakeSafetensorsRaw("", ""), {"header is not valid JSON"});
  ExpectRejected(MakeSafetensorsRaw("[1, 2]", ""), {"header must be a JSON object, got array"});
  ExpectRejected(MakeSafetensorsRaw(R"({"w": 5})", ""), {"tensor \"w\": entry must be an object"});
}

TEST(SafetensorsTest, AcceptsSpacePaddedHeader) {
  ASSERT_TRUE(ParseImage(MakeSafetensorsRaw("{}      ", "")).ok());
}

TEST(SafetensorsTest, RejectsUnsupportedDTypeNamingTensor) {
  ExpectRejected(OneTensor("[2]", "[0, 16]", 16, "I64"),
                 {"tensor \"w\"", "dtype \"I64\" is not supported (supported: F32, BF16, F16, I32)"});
  ExpectRejected(
      MakeSafetensorsRaw(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", std::string(4, '\0')),
      {"tensor \"w\": dtype must be a string"});
}

TEST(SafetensorsTest, RejectsShapeOffsetSizeMismatch) {
  ExpectRejected(OneTensor("[2, 2]", "[0, 12]", 16),
                 {"tensor \"w\"", "need 16 bytes but data_offsets [0, 12] span 12"});
}

TEST(SafetensorsTest, RejectsOffsetsPastEndAndTruncatedData) {
  ExpectRejected(OneTensor("[4]", "[0, 16]", 8),
                 {"tensor \"w\"", "data_offsets end 16 is past the data section (8 bytes"});
  std::vector<float> values(8, 1.0f);
  std::string image = MakeSafetensors({{"w", "F32", {8}, testing::F32Bytes(values)}});
  image.resize(image.size() - 1);
  ExpectRejected(image, {"past the data section", "truncated"});
}

TEST(SafetensorsTest, RejectsBeginAfterEndAndBadOffsetArrays) {
  ExpectRejected(OneTensor("[0]", "[8, 4]", 8), {"tensor \"w\"", "[8, 4] have begin > end"});
  for (const char* offsets : {"[0]", "[0, 4, 8]", "[-4, 4]", "\"0-4\"", "[0, 4.0]"}) {
    ExpectRejected(OneTensor("[1]", offsets, 8), {"data_offsets must be [begin, end]"});
  }
}

TEST(SafetensorsTest, RejectsOverlappingRanges) {
  std::string image = MakeSafetensorsRaw(
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      std::string(12, '\0'));
  ExpectRejected(image, {"tensors \"a\" [0, 8) and \"b\" [4, 12) overlap"});
  // Empty tensors may share an offset with anything.
  std::string empty = MakeSafetensorsRaw(
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
      std::string(8, '\0'));
  EXPECT_TRUE(ParseImage(empty).ok());
}

TEST(SafetensorsTest, RejectsNegativeAndNonIntegerShapes) {
  for (const char* shape : {"[2, -1]", "[2.5]", "[\"2\"]", "4", "null"}) {
    ExpectRejected(OneTensor(shape, "[0, 8]", 8), {"tensor \"w\"", "shape"});
  }
}

TEST(SafetensorsTest, RejectsShapeWhoseElementCountOverflows) {
  ExpectRejected(OneTensor("[4294967296, 4294967296, 4294967296]", "[0, 8]", 8),
                 {"tensor \"w\"", "too many elements"});
  ExpectRejected(OneTensor("[2305843009213693952, 4]", "[0, 8]", 8), {"tensor \"w\"", "shape"});
  ExpectRejected(OneTensor("[18446744073709551615]", "[0, 8]", 8), {"tensor \"w\"", "shape"});
  // A zero dimension makes the count 0 whatever the others are.
  EXPECT_TRUE(ParseImage(OneTensor("[0, 1152921504606846975]", "[0, 0]", 0)).ok());
}

TEST(SafetensorsTest, RejectsBadMetadata) {
  ExpectRejected(MakeSafetensorsRaw(R"({"__metadata__": {"format": 1}})", ""),
                 {"__metadata__ value for \"format\" must be a string"});
  ExpectRejected(MakeSafetensorsRaw(R"({"__metadata__": ["pt"]})", ""),
                 {"__metadata__ must be an object"});
}

TEST(SafetensorsTest, OpenMissingFileIsNotFound) {
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent/x.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, WriterFileRoundTripsThroughOpenAndConvert) {
  // F32, and BF16/F16 bit patterns for 1.0, -2.5, max, min subnormal, inf, NaN.
  std::vector<float> f32 = {
      1.0f, -2.5f, std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
      0.1f, -0.0f};
  std::vector<uint16_t> bf16 = {0x3F80, 0xC020, 0x7F7F, 0x0001, 0x7F80, 0x7FC0};
  std::vector<uint16_t> f16 = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x7C00, 0x7E00};
  std::string path = testing::MakeTempDir("roundtrip") + "/x.safetensors";
  testing::WriteFile(path, MakeSafetensors({{"f32", "F32", {2, 3}, testing::F32Bytes(f32)},
                                            {"bf16", "BF16", {6}, testing::U16Bytes(bf16)},
                                            {"f16", "F16", {3, 2}, testing::U16Bytes(f16)}}));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<float> out(6);
  ConvertToFloat((*file)->tensors().at("f32"), out);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(f32[i])) << i;
  }
  const float inf = std::numeric_limits<float>::infinity();
  ConvertToFloat((*file)->tensors().at("bf16"), out);
  EXPECT_THAT(std::vector<float>(out.begin(), out.begin() + 5),
              ElementsAre(1.0f, -2.5f, std::bit_cast<float>(0x7F7F0000u), 0x1p-133f, inf));
  EXPECT_TRUE(std::isnan(out[5]));
  ConvertToFloat((*file)->tensors().at("f16"), out);
  EXPECT_THAT(std::vector<float>(out.begin(), out.begin() + 5),
              ElementsAre(1.0f, -2.5f, 65504.0f, 0x1p-24f, inf));
  EXPECT_TRUE(std::isnan(out[5]));
}

TEST(SafetensorsDeathTest, ConvertChecksOutputSize) {
  std::vector<float> values = {1, 2, 3};
  std::string image = MakeSafetensors({{"w", "F32", {3}, testing::F32Bytes(values)}});
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = ParseImage(image);
  ASSERT_TRUE(file.ok());
  std::vector<float> out(2);
  EXPECT_DEATH(ConvertToFloat((*file)->tensors().at("w"), out), "out.size");
}

TEST(SafetensorsTest, GoldenLogitsParse) {
  for (const char* model : {"llama3-tiny", "llama2-tiny"}) {
    std::string path = testing::FixturePath(std::string("models/") + model + "/golden.safetensors");
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_FALSE((*file)->tensors().empty());
    for (const auto& [name, tensor] : (*file)->tensors()) {
      EXPECT_EQ(tensor.dtype, DType::kF32) << name;
      ASSERT_EQ(tensor.shape.size(), 2u) << name;
      EXPECT_EQ(tensor.shape[1], 1024) << name;  // vocab_size
      std::vector<float> logits(static_cast<size_t>(tensor.NumElements()));
      ConvertToFloat(tensor, logits);
      EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float x) {
        return std::isfinite(x);
      })) << name;
    }
  }
}

// Token ids in fixture files are I32: readable, and widened exactly.
TEST(SafetensorsFixtureTest, ReadsI32TokenIds) {
  auto file = SafetensorsFile::Open(testing::FixturePath("sampling/processors.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorView& ids = (*file)->tensors().at("input_ids");
  EXPECT_EQ(ids.dtype, DType::kI32);
  EXPECT_EQ(ids.shape, (std::vector<int64_t>{6, 24}));
  std::vector<float> values(ids.NumElements());
  ConvertToFloat(ids, values);
  EXPECT_EQ(values[4 * 24 + 0], 5.0f);  // row 4 is [5, 6, 7] * 8
  EXPECT_EQ(values[4 * 24 + 4], 6.0f);
}

}  // namespace
}  // namespace tandem
