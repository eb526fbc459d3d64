// tokenizer.json "decoder": turns the token strings of Decode's ids back into text.
// Supported types: ByteLevel, Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace.
// Sequences are flattened at load. Like HF, each step maps a list of strings to a list of
// strings ("decode chain"), and the final list is concatenated; with no decoder the tokens
// are joined with single spaces. HF's quirks are kept on purpose: Metaspace drops *every*
// replacement character of the first string (not only a leading one), ByteFallback turns a
// run of <0xNN> tokens that is not valid UTF-8 into one U+FFFD per byte, and ByteLevel
// replaces ill-formed bytes with U+FFFD per maximal subpart.
// Immutable after FromJson; Decode is thread-safe. Output is always valid UTF-8 when every
// step's input tokens are.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_fields.h"
#include "common/tokenizer/metaspace.h"
#include "common/tokenizer/regex.h"

namespace tandem::tokenizer {

class Decoder {
 public:
  // Parses the "decoder" value (null: join tokens with spaces).
  static absl::StatusOr<Decoder> FromJson(const Json& json, std::string_view path);

  std::string Decode(std::vector<std::string> tokens) const;

 private:
  struct ByteLevel {};
  struct ByteFallback {};
  struct Fuse {};
  struct Replace {
    Pattern pattern;
    std::string content;
  };
  struct Strip {
    std::string content;  // one character
    size_t start;         // at most this many leading `content` characters are removed
    size_t stop;          // ... and trailing ones
  };
  using Step = std::variant<ByteLevel, ByteFallback, Fuse, Replace, Strip, MetaspaceOptions>;

  absl::Status AddJson(const Json& json, std::string_view path);
  absl::Status AddStrip(const Json& json, std::string_view path);

  bool is_null_ = true;
  std::vector<Step> steps_;
};

}  // namespace tandem::tokenizer
