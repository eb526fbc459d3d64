// Hostile-input robustness: truncations and random header corruptions of a valid file must
// only ever give OK or an error, never a crash or an out-of-bounds view (run under ASan).
#include <random>
#include <string>
#include <vector>

#include "common/model/safetensors.h"
#include "gtest/gtest.h"
#include "tests/common/model/safetensors_writer.h"

namespace tandem {
namespace {

using testing::AsBytes;

std::string ValidImage() {
  std::vector<float> f32 = {1, 2, 3, 4, 5, 6};
  std::vector<uint16_t> u16 = {0x3C00, 0xC100, 0x7BFF, 0x0001};
  return testing::MakeSafetensors({{"a.weight", "F32", {2, 3}, testing::F32Bytes(f32)},
                                   {"b.weight", "BF16", {4}, testing::U16Bytes(u16)},
                                   {"c.weight", "F16", {2, 2}, testing::U16Bytes(u16)},
                                   {"d.empty", "F16", {0}, ""}},
                                  {{"format", "pt"}});
}

size_t HeaderEnd(const std::string& image) {
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, image.data(), 8);
  return 8 + header_bytes;
}

// On success every view must lie inside `image` and match its shape and dtype.
void ExpectSaneIfParsed(const std::string& image) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Parse(AsBytes(image), "fuzz.safetensors");
  if (!file.ok()) {
    EXPECT_FALSE(file.status().message().empty());
    return;
  }
  const std::byte* begin = AsBytes(image).data();
  const std::byte* end = begin + image.size();
  for (const auto& [name, tensor] : (*file)->tensors()) {
    ASSERT_EQ(tensor.data.size(),
              static_cast<size_t>(tensor.NumElements()) * DTypeSize(tensor.dtype));
    if (tensor.data.empty()) continue;
    ASSERT_GE(tensor.data.data(), begin);
    ASSERT_LE(tensor.data.data() + tensor.data.size(), end);
    std::vector<float> out(tensor.data.size() / DTypeSize(tensor.dtype));
    ConvertToFloat(tensor, out);
  }
}

TEST(SafetensorsFuzzTest, EveryTruncationIsRejected) {
  const std::string image = ValidImage();
  ASSERT_TRUE(SafetensorsFile::Parse(AsBytes(image), "fuzz.safetensors").ok());
  for (size_t length = 0; length < image.size(); ++length) {
    // A fresh heap copy so ASan sees reads past the truncated end.
    std::string truncated = image.substr(0, length);
    EXPECT_FALSE(SafetensorsFile::Parse(AsBytes(truncated), "fuzz.safetensors").ok()) << length;
  }
}

TEST(SafetensorsFuzzTest, RandomHeaderByteCorruptionsNeverCrash) {
  const std::string image = ValidImage();
  const size_t header_end = HeaderEnd(image);
  std::mt19937 rng(12345);
  std::uniform_int_distribution<size_t> position(0, header_end - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  const char kInteresting[] = "{}[]\",:-0123456789e.\\ \x00\xff";
  std::uniform_int_distribution<size_t> interesting(0, sizeof(kInteresting) - 1);
  int num_ok = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string corrupted = image;
    bool structural = i % 2 == 0;  // half the time a JSON-significant character
    corrupted[position(rng)] =
        structural ? kInteresting[interesting(rng)] : static_cast<char>(byte(rng));
    ExpectSaneIfParsed(corrupted);
    num_ok += SafetensorsFile::Parse(AsBytes(corrupted), "fuzz.safetensors").ok();
  }
  // Some corruptions (e.g. inside "pt" or a name) keep the file valid; most do not.
  EXPECT_LT(num_ok, 5000);
}

TEST(SafetensorsFuzzTest, RandomMultiByteCorruptionsNeverCrash) {
  const std::string image = ValidImage();
  const size_t header_end = HeaderEnd(image);
  std::mt19937 rng(777);
  std::uniform_int_distribution<size_t> position(8, header_end - 1);
  std::uniform_int_distribution<int> digit('0', '9');
  for (int i = 0; i < 2000; ++i) {
    std::string corrupted = image;
    for (int j = 0; j < 4; ++j) {  // rewrite digits: new shapes and offsets, still valid JSON
      size_t at = position(rng);
      if (std::isdigit(static_cast<unsigned char>(corrupted[at]))) {
        corrupted[at] = static_cast<char>(digit(rng));
      }
    }
    ExpectSaneIfParsed(corrupted);
  }
}

}  // namespace
}  // namespace tandem
