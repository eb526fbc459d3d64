#include "common/tokenizer/added_tokens.h"

#include <algorithm>
#include <cctype>
#include <limits>

#include "common/tokenizer/strings.h"
#include "common/status.h"
#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {
namespace {

bool IsWhitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Word characters for single_word: ASCII alphanumerics, '_' and (approximately) any
// non-ASCII character that is not whitespace.
bool IsWordChar(char32_t cp) {
  if (cp < 0x80) return std::isalnum(static_cast<int>(cp)) != 0 || cp == '_';
  return !IsWhitespace(cp);
}

// Start of the character ending just before `pos` (pos > 0, valid UTF-8).
size_t PreviousCharStart(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
  return start;
}

size_t SkipWhitespaceLeft(std::string_view text, size_t pos, size_t floor) {
  while (pos > floor && IsWhitespace(DecodeCodePoint(text, PreviousCharStart(text, pos)))) {
    pos = PreviousCharStart(text, pos);
  }
  return pos;
}

size_t SkipWhitespaceRight(std::string_view text, size_t pos) {
  while (pos < text.size() && IsWhitespace(DecodeCodePoint(text, pos))) {
    pos += CharLength(text, pos);
  }
  return pos;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool normalized) {
  for (const AddedToken& token : tokens) {
    if (token.normalized == normalized && !token.content.empty()) tokens_.push_back(token);
  }
  for (size_t i = 0; i < tokens_.size(); ++i) by_first_byte_[tokens_[i].content[0]].push_back(i);
  for (auto& [byte, indices] : by_first_byte_) {
    std::stable_sort(indices.begin(), indices.end(), [&](size_t a, size_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

bool AddedTokenMatcher::FindAt(std::string_view text, size_t pos, size_t floor,
                               Candidate* out) const {
  auto it = by_first_byte_.find(text[pos]);
  if (it == by_first_byte_.end()) return false;
  for (size_t index : it->second) {
    const AddedToken& token = tokens_[index];
    if (text.substr(pos).starts_with(token.content) == false) continue;
    const size_t end = pos + token.content.size();
    if (token.single_word) {
      const bool word_before = pos > 0 && IsWordChar(DecodeCodePoint(text, PreviousCharStart(text, pos)));
      const bool word_after = end < text.size() && IsWordChar(DecodeCodePoint(text, end));
      if (word_before || word_after) continue;
    }
    out->token_index = index;
    out->begin = token.lstrip ? SkipWhitespaceLeft(text, pos, floor) : pos;
    out->end = token.rstrip ? SkipWhitespaceRight(text, end) : end;
    return true;
  }
  return false;
}

std::vector<TextSegment> AddedTokenMatcher::Split(std::string_view text) const {
  std::vector<TextSegment> segments;
  size_t plain_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    Candidate match;
    if (tokens_.empty() || !FindAt(text, pos, plain_begin, &match)) {
      pos += CharLength(text, pos);
      continue;
    }
    if (match.begin > plain_begin) {
      segments.push_back({text.substr(plain_begin, match.begin - plain_begin), -1, plain_begin});
    }
    segments.push_back({text.substr(match.begin, match.end - match.begin),
                        tokens_[match.token_index].id, match.begin});
    plain_begin = pos = match.end;
  }
  if (plain_begin < text.size()) {
    segments.push_back({text.substr(plain_begin), -1, plain_begin});
  }
  return segments;
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root) {
  std::vector<AddedToken> tokens;
  TANDEM_ASSIGN_OR_RETURN(const Json* list, FindField(root, "", "added_tokens"));
  if (list == nullptr) return tokens;
  if (!list->is_array()) return JsonError("added_tokens", "must be an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& entry = (*list)[i];
    const std::string path = JsonIndexPath("added_tokens", i);
    AddedToken token;
    TANDEM_ASSIGN_OR_RETURN(int64_t id,
                            RequireInt(entry, path, "id", 0, std::numeric_limits<int32_t>::max()));
    token.id = static_cast<int32_t>(id);
    TANDEM_ASSIGN_OR_RETURN(token.content, RequireString(entry, path, "content"));
    if (token.content.empty()) return JsonError(JsonPath(path, "content"), "must not be empty");
    if (FirstInvalidUtf8Offset(token.content)) {
      return JsonError(JsonPath(path, "content"), "is not valid UTF-8");
    }
    TANDEM_ASSIGN_OR_RETURN(token.special, OptionalBool(entry, path, "special", false));
    TANDEM_ASSIGN_OR_RETURN(token.single_word, OptionalBool(entry, path, "single_word", false));
    TANDEM_ASSIGN_OR_RETURN(token.lstrip, OptionalBool(entry, path, "lstrip", false));
    TANDEM_ASSIGN_OR_RETURN(token.rstrip, OptionalBool(entry, path, "rstrip", false));
    TANDEM_ASSIGN_OR_RETURN(token.normalized, OptionalBool(entry, path, "normalized", true));
    tokens.push_back(std::move(token));
  }
  return tokens;
}

}  // namespace tandem::tokenizer
