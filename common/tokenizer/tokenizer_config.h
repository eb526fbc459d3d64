// The parts of tokenizer_config.json the tokenizer uses: which tokens are BOS/EOS and whether
// to add them when tokenizer.json has no post-processor.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace tandem::tokenizer {

struct TokenizerConfig {
  std::optional<std::string> bos_token;  // token content
  std::optional<std::string> eos_token;
  bool add_bos_token = false;
  bool add_eos_token = false;
};

// Parses tokenizer_config.json text; empty text gives the defaults. bos_token/eos_token may
// be a string, null, or an object whose "content" is the string.
absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view json_text);

}  // namespace tandem::tokenizer
