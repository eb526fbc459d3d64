#include "common/tokenizer/utf8.h"

#include "common/tokenizer/byte_level.h"
#include "gtest/gtest.h"

namespace tandem::tokenizer {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

TEST(Utf8Test, FirstInvalidOffset) {
  EXPECT_EQ(FirstInvalidUtf8Offset("héllo 你好 😀"), std::nullopt);
  EXPECT_EQ(FirstInvalidUtf8Offset("ab\x80"), 2u);
  EXPECT_EQ(FirstInvalidUtf8Offset("a\xE4\xBD"), 1u);       // truncated
  EXPECT_EQ(FirstInvalidUtf8Offset("\xF4\x90\x80\x80"), 0u);  // > U+10FFFF
}

// Each maximal ill-formed subpart becomes one U+FFFD, as Rust's from_utf8_lossy does.
TEST(Utf8Test, LossyConversionReplacesMaximalSubparts) {
  EXPECT_EQ(ToValidUtf8Lossy("abc"), "abc");
  EXPECT_EQ(ToValidUtf8Lossy("\xE4\xBD"), kFffd);                   // one truncated char
  EXPECT_EQ(ToValidUtf8Lossy("\xE4" "a\xBD\x82"), kFffd + "a" + kFffd + kFffd);
  EXPECT_EQ(ToValidUtf8Lossy("\xF0\x9F\x98"), kFffd);
  EXPECT_EQ(ToValidUtf8Lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // surrogate
  EXPECT_EQ(ToValidUtf8Lossy("\xC0\xAF"), kFffd + kFffd);              // overlong
}

TEST(ByteLevelTest, RoundTripsEveryByte) {
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes.push_back(static_cast<char>(b));
  const std::string chars = BytesToByteChars(bytes);
  EXPECT_EQ(BytesToByteChars(" \n"), "ĠĊ");
  std::string back;
  ASSERT_TRUE(ByteCharsToBytes(chars, back));
  EXPECT_EQ(back, bytes);
  std::string out = "x";
  EXPECT_FALSE(ByteCharsToBytes("a你", out));  // '你' is not a byte character
  EXPECT_EQ(out, "x");
}

}  // namespace
}  // namespace tandem::tokenizer
