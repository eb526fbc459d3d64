// tokenizer.json "model" of type BPE: byte-level BPE (GPT-2, Llama 3) and SentencePiece-style
// BPE (Llama 2, Mistral: byte_fallback, unk_token, fuse_unk).
//
// A word is split into characters (each looked up in the vocab; unknown ones become
// <0xNN> byte tokens with byte_fallback, else unk_token, else are dropped), then the
// adjacent pair with the lowest merge rank (leftmost on ties) is merged until none applies.
// A priority queue keeps this O(n log n) per word. With ignore_merges, a word that is itself
// in the vocab is emitted as one token without merging.
//
// Immutable after FromJson; Tokenize is const and thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/json_fields.h"
#include "common/tokenizer/strings.h"

namespace tandem::tokenizer {

class BpeModel {
 public:
  // Parses the "model" object. Errors (naming the field) on a non-BPE type, ids outside
  // [0, 2^31), duplicate ids, merges naming tokens missing from the vocab, or an unk_token
  // that is not in the vocab.
  static absl::StatusOr<BpeModel> FromJson(const Json& json, std::string_view path);

  // Appends the ids of `word` (valid UTF-8, non-empty) to `ids`.
  void Tokenize(std::string_view word, std::vector<int32_t>& ids) const;

  // token -> id of the model's own vocabulary (added tokens are not in it unless the file
  // lists them here too).
  const StringMap<int32_t>& vocab() const { return vocab_; }

 private:
  struct MergeTarget {
    int32_t rank;
    int32_t new_id;
  };
  struct Symbol {
    int32_t id;
    int32_t prev;  // index of the previous live symbol, -1 at the start
    int32_t next;  // index of the next live symbol, -1 at the end
    bool alive;
  };

  absl::Status ParseOptions(const Json& json, std::string_view path);
  absl::Status ParseVocab(const Json& json, std::string_view path);
  absl::Status ParseMerges(const Json& json, std::string_view path);
  absl::Status AddMerge(std::string_view left, std::string_view right, int32_t rank,
                        std::string_view path);
  std::vector<Symbol> InitialSymbols(std::string_view word) const;
  bool AppendByteFallback(std::string_view ch, std::vector<Symbol>& symbols) const;
  void Merge(std::vector<Symbol>& symbols) const;
  const MergeTarget* FindMerge(int32_t left, int32_t right) const;

  StringMap<int32_t> vocab_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;  // key: left id << 32 | right id
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // id of "<0xNN>", -1 when the vocab lacks it
};

}  // namespace tandem::tokenizer
