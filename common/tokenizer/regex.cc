#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/tokenizer/strings.h"
#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {
namespace {

pcre2_code* Code(void* code) { return static_cast<pcre2_code*>(code); }

// The Unicode White_Space property, which is what Oniguruma's \s (and so HF's) matches.
// PCRE2's own \s differs by version (10.42 also matches U+180E), so \s and \S are spelled out.
constexpr std::string_view kWhiteSpaceClassBody =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Copies a bracket class starting at pattern[pos] == '[' to `out`, rewriting \s inside it;
// returns the position after the closing ']'.
size_t TranslateClass(std::string_view pattern, size_t pos, std::string& out) {
  out.push_back(pattern[pos++]);
  if (pos < pattern.size() && pattern[pos] == '^') out.push_back(pattern[pos++]);
  if (pos < pattern.size() && pattern[pos] == ']') out.push_back(pattern[pos++]);  // literal ']'
  while (pos < pattern.size() && pattern[pos] != ']') {
    if (pattern[pos] == '\\' && pos + 1 < pattern.size()) {
      if (pattern[pos + 1] == 's') {
        out.append(kWhiteSpaceClassBody);
      } else {
        out.append(pattern.substr(pos, 2));  // \S inside a class is left to PCRE2
      }
      pos += 2;
    } else if (pattern.substr(pos).starts_with("[:")) {  // POSIX class like [:alpha:]
      const size_t end = pattern.find(":]", pos + 2);
      const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
      out.append(pattern.substr(pos, stop - pos));
      pos = stop;
    } else {
      out.push_back(pattern[pos++]);
    }
  }
  if (pos < pattern.size()) out.push_back(pattern[pos++]);
  return pos;
}

std::string TranslatePattern(std::string_view pattern) {
  std::string out;
  size_t pos = 0;
  while (pos < pattern.size()) {
    const char c = pattern[pos];
    if (c == '[') {
      pos = TranslateClass(pattern, pos, out);
    } else if (c == '\\' && pos + 1 < pattern.size()) {
      const char next = pattern[pos + 1];
      if (next == 's' || next == 'S') {
        out.append(next == 's' ? "[" : "[^").append(kWhiteSpaceClassBody).append("]");
      } else {
        out.append(pattern.substr(pos, 2));
      }
      pos += 2;
    } else {
      out.push_back(c);
      ++pos;
    }
  }
  return out;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Regex>> Regex::Compile(std::string_view pattern) {
  const std::string translated = TranslatePattern(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()),
                                   translated.size(), PCRE2_UTF | PCRE2_UCP, &error_code,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return absl::InvalidArgumentError(Cat("regex \"", pattern, "\" does not compile at offset ",
                                                   error_offset, ": ",
                                                   reinterpret_cast<const char*>(message)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: interpreted matching still works
  return std::shared_ptr<const Regex>(new Regex(code));
}

Regex::~Regex() { pcre2_code_free(Code(code_)); }

std::vector<Match> Regex::FindAll(std::string_view subject) const {
  std::vector<Match> matches;
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create_from_pattern(Code(code_), nullptr));
  const auto* bytes = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t start = 0;
  uint32_t options = 0;
  while (start <= subject.size()) {
    int rc = pcre2_match(Code(code_), bytes, subject.size(), start, options, data.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      options |= PCRE2_NO_JIT;  // very long runs overflow the default JIT stack
      continue;
    }
    if (rc < 0) break;  // no match (or a resource limit: the rest is left unmatched)
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end == begin) {
      // Empty match: skip it and move one character on, as Rust/Oniguruma iterators do.
      if (begin >= subject.size()) break;
      start = begin + CharLength(subject, begin);
      continue;
    }
    matches.push_back({begin, end});
    start = end;
  }
  return matches;
}

std::vector<Match> Pattern::FindAll(std::string_view subject) const {
  if (regex != nullptr) return regex->FindAll(subject);
  std::vector<Match> matches;
  if (literal.empty()) return matches;
  size_t pos = subject.find(literal);
  while (pos != std::string_view::npos) {
    matches.push_back({pos, pos + literal.size()});
    pos = subject.find(literal, pos + literal.size());
  }
  return matches;
}

std::string ReplaceAll(const Pattern& pattern, std::string_view text, std::string_view content) {
  std::string out;
  out.reserve(text.size());
  size_t last = 0;
  for (const Match& m : pattern.FindAll(text)) {
    out.append(text.substr(last, m.begin - last));
    out.append(content);
    last = m.end;
  }
  out.append(text.substr(last));
  return out;
}

}  // namespace tandem::tokenizer
