// A compiled PCRE2 pattern (UTF + UCP, JIT when available) used by the Split and ByteLevel
// pre-tokenizers and by Replace normalizers/decoders with a Regex pattern.
//
// Thread safety: FindAll is const and allocates its own match data, so one Regex may be
// shared by any number of threads.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::tokenizer {

// Byte range [begin, end) of one match in the subject.
struct Match {
  size_t begin;
  size_t end;
};

class Regex {
 public:
  // Compiles `pattern` (Oniguruma-compatible syntax as used by tokenizer.json). `\s` is
  // made to mean Oniguruma's Unicode whitespace, which PCRE2 spells differently.
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(std::string_view pattern);

  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches, left to right; an empty match advances by one character.
  // `subject` must be valid UTF-8.
  std::vector<Match> FindAll(std::string_view subject) const;

 private:
  explicit Regex(void* code) : code_(code) {}
  void* code_;  // pcre2_code_8*, owned
};

// A Replace/Split pattern: a literal string or a regex.
struct Pattern {
  std::string literal;                  // used when regex is null
  std::shared_ptr<const Regex> regex;

  std::vector<Match> FindAll(std::string_view subject) const;
};

// Replaces every match of `pattern` in `text` with `content`.
std::string ReplaceAll(const Pattern& pattern, std::string_view text, std::string_view content);

}  // namespace tandem::tokenizer
