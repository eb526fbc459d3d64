#include "common/tokenizer/byte_level.h"

#include <array>
#include <optional>

#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {
namespace {

bool IsSelfMapped(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<std::string, 256> byte_to_chars;  // UTF-8 of the byte's character
  std::array<int16_t, 512> code_point_to_byte;  // -1 when the code point is not a byte char
};

Tables BuildTables() {
  Tables t;
  t.code_point_to_byte.fill(-1);
  int next_extra = 0;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = IsSelfMapped(b) ? static_cast<char32_t>(b) : 256 + next_extra++;
    AppendCodePoint(cp, t.byte_to_chars[b]);
    t.code_point_to_byte[cp] = static_cast<int16_t>(b);
  }
  return t;
}

const Tables& GetTables() {
  static const Tables* tables = new Tables(BuildTables());
  return *tables;
}

}  // namespace

std::string BytesToByteChars(std::string_view bytes) {
  const Tables& t = GetTables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out.append(t.byte_to_chars[static_cast<uint8_t>(c)]);
  return out;
}

bool ByteCharsToBytes(std::string_view token, std::string& out) {
  const Tables& t = GetTables();
  const size_t old_size = out.size();
  for (size_t pos = 0; pos < token.size(); pos += CharLength(token, pos)) {
    const char32_t cp = DecodeCodePoint(token, pos);
    const int16_t b = cp < t.code_point_to_byte.size() ? t.code_point_to_byte[cp] : -1;
    if (b < 0) {
      out.resize(old_size);
      return false;
    }
    out.push_back(static_cast<char>(b));
  }
  return true;
}

}  // namespace tandem::tokenizer
