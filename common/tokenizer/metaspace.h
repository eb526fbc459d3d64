// Options shared by the Metaspace pre-tokenizer and decoder: spaces become `replacement`
// (usually "▁", U+2581), and a replacement may be prepended to the text.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_fields.h"

namespace tandem::tokenizer {

enum class PrependScheme {
  kFirst,   // prepend only to the piece at the very start of the input text
  kAlways,  // prepend to every piece that does not already start with the replacement
  kNever,
};

struct MetaspaceOptions {
  std::string replacement;  // one character
  PrependScheme prepend_scheme = PrependScheme::kAlways;
  bool split = true;  // pre-tokenizer only: split before each replacement character
};

// Reads replacement, prepend_scheme ("first" | "always" | "never"; older files give
// add_prefix_space instead: true = always, false = never) and split (default true).
absl::StatusOr<MetaspaceOptions> ParseMetaspaceOptions(const Json& json, std::string_view path);

}  // namespace tandem::tokenizer
