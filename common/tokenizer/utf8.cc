#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {
namespace {

bool IsContinuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Valid range of the second byte for lead byte `lead` (Unicode Table 3-7), and the total
// sequence length; length 0 means `lead` cannot start a character.
struct LeadInfo {
  size_t length;
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo InfoForLead(uint8_t lead) {
  if (lead < 0x80) return {1, 0, 0};
  if (lead >= 0xC2 && lead <= 0xDF) return {2, 0x80, 0xBF};
  if (lead == 0xE0) return {3, 0xA0, 0xBF};
  if (lead == 0xED) return {3, 0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {3, 0x80, 0xBF};
  if (lead == 0xF0) return {4, 0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {4, 0x80, 0xBF};
  if (lead == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes starting at pos that form a well-formed prefix of a character
// (at least 1 for a non-empty remainder), and whether they complete the character.
size_t ValidPrefixLength(std::string_view text, size_t pos, bool* complete) {
  const auto lead = static_cast<uint8_t>(text[pos]);
  const LeadInfo info = InfoForLead(lead);
  *complete = info.length == 1;
  if (info.length <= 1) return 1;
  size_t n = 1;
  while (n < info.length && pos + n < text.size()) {
    const auto b = static_cast<uint8_t>(text[pos + n]);
    const bool ok = n == 1 ? (b >= info.second_lo && b <= info.second_hi) : IsContinuation(b);
    if (!ok) break;
    ++n;
  }
  *complete = n == info.length;
  return n;
}

}  // namespace

size_t WellFormedCharLength(std::string_view text, size_t pos) {
  bool complete = false;
  const size_t n = ValidPrefixLength(text, pos, &complete);
  return complete ? n : 0;
}

std::optional<size_t> FirstInvalidUtf8Offset(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t n = WellFormedCharLength(text, pos);
    if (n == 0) return pos;
    pos += n;
  }
  return std::nullopt;
}

size_t CharLength(std::string_view text, size_t pos) {
  const size_t n = InfoForLead(static_cast<uint8_t>(text[pos])).length;
  return n == 0 ? 1 : n;
}

char32_t DecodeCodePoint(std::string_view text, size_t pos) {
  const auto lead = static_cast<uint8_t>(text[pos]);
  const size_t n = CharLength(text, pos);
  if (n == 1) return lead;
  char32_t cp = lead & (0x7F >> n);
  for (size_t i = 1; i < n && pos + i < text.size(); ++i) {
    cp = (cp << 6) | (static_cast<uint8_t>(text[pos + i]) & 0x3F);
  }
  return cp;
}

void AppendCodePoint(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string ToValidUtf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    bool complete = false;
    const size_t n = ValidPrefixLength(bytes, pos, &complete);
    if (complete) {
      out.append(bytes.substr(pos, n));
    } else {
      out.append(kReplacementChar);
    }
    pos += n;
  }
  return out;
}

}  // namespace tandem::tokenizer
