// tokenizer.json "normalizer": rewrites each piece of text that is not an added token before
// pre-tokenization. Supported types: Sequence, Prepend, Replace (String or Regex pattern).
// Sequences are flattened into one ordered list of steps at load.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_fields.h"
#include "common/tokenizer/regex.h"

namespace tandem::tokenizer {

class Normalizer {
 public:
  // Parses the "normalizer" value (null gives the identity). `path` names it in errors.
  static absl::StatusOr<Normalizer> FromJson(const Json& json, std::string_view path);

  // Applies every step in order. Thread-safe (const, no shared mutable state).
  std::string Normalize(std::string_view text) const;

  bool empty() const { return steps_.empty(); }

 private:
  struct Prepend {
    std::string prepend;  // added in front of non-empty text
  };
  struct Replace {
    Pattern pattern;
    std::string content;
  };
  using Step = std::variant<Prepend, Replace>;

  absl::Status AddJson(const Json& json, std::string_view path);

  std::vector<Step> steps_;
};

}  // namespace tandem::tokenizer
