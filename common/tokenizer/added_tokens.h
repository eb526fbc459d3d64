// tokenizer.json "added_tokens": tokens matched verbatim in the input before normalization and
// pre-tokenization, and never split (special tokens like <|begin_of_text|>, <s>).
//
// Matching is leftmost, then longest (HF's leftmost-longest). Options per token:
//   single_word: only matches when not touching a word character on either side;
//   lstrip / rstrip: the match also swallows whitespace to its left / right;
//   normalized: matched in the normalized text instead of the raw text.
// Immutable after construction; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/json_fields.h"

namespace tandem::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// One piece of the input: an added token (id >= 0) or plain text (id == -1).
struct TextSegment {
  std::string_view text;
  int32_t id;
  size_t offset;  // byte offset of `text` in the string that was split
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // Matches the tokens whose `normalized` flag equals `normalized`.
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, bool normalized);

  // Splits `text` into added-token segments and the plain text between them, in order
  // (plain segments may be empty and are then omitted).
  std::vector<TextSegment> Split(std::string_view text) const;

 private:
  struct Candidate {
    size_t token_index;
    size_t begin;  // of the whole match, after lstrip
    size_t end;    // after rstrip
  };
  bool FindAt(std::string_view text, size_t pos, size_t floor, Candidate* out) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<char, std::vector<size_t>> by_first_byte_;  // longest content first
};

// Parses the "added_tokens" array; ids must be in [0, 2^31) and contents non-empty.
absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root);

}  // namespace tandem::tokenizer
