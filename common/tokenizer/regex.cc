#include "common/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/tokenizer/strings.h"
#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {
namespace {

pcre2_code* Code(void* code) { return static_cast<pcre2_code*>(code); }

// Oniguruma's Unicode \s is the White_Space property; PCRE2's UCP \s lacks nothing we have
// observed except U+0085 NEL, which Oniguruma (and so HF) does NOT treat as \s either, so the
// pattern is used verbatim. Kept as a function so a future divergence has one home.
std::string TranslatePattern(std::string_view pattern) { return std::string(pattern); }

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
