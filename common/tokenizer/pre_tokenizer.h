// tokenizer.json "pre_tokenizer": splits one normalized piece of text into the words the
// model tokenizes independently. Supported types: Sequence, Split (String or Regex pattern,
// every behavior, invert), ByteLevel (add_prefix_space, use_regex = GPT-2 pattern; maps the
// bytes to GPT-2's byte characters) and Metaspace. Sequences are flattened at load.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_fields.h"
#include "common/tokenizer/metaspace.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/split.h"

namespace tandem::tokenizer {

class PreTokenizer {
 public:
  // Parses the "pre_tokenizer" value (null: the whole piece is one word).
  static absl::StatusOr<PreTokenizer> FromJson(const Json& json, std::string_view path);

  // Splits `text`; `at_text_start` says whether it begins at byte 0 of the caller's input
  // (Metaspace's prepend_scheme "first" needs it). Returns non-empty words in order.
  // Thread-safe.
  std::vector<std::string> PreTokenize(std::string_view text, bool at_text_start) const;

 private:
  struct Piece {
    std::string text;
    bool at_text_start;
  };
  struct Split {
    Pattern pattern;
    SplitBehavior behavior;
    bool invert;
  };
  struct ByteLevel {
    bool add_prefix_space;
    std::shared_ptr<const Regex> regex;  // null when use_regex is false
  };
  using Step = std::variant<Split, ByteLevel, MetaspaceOptions>;

  absl::Status AddJson(const Json& json, std::string_view path);
  absl::Status AddSplit(const Json& json, std::string_view path);
  absl::Status AddByteLevel(const Json& json, std::string_view path);
  static void ApplySplit(const Split& split, Piece piece, std::vector<Piece>& out);
  static void ApplyByteLevel(const ByteLevel& byte_level, Piece piece, std::vector<Piece>& out);
  static void ApplyMetaspace(const MetaspaceOptions& options, Piece piece, std::vector<Piece>& out);

  std::vector<Step> steps_;
};

}  // namespace tandem::tokenizer
