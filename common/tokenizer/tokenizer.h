// Tokenizer: a C++ implementation of Hugging Face `tokenizers` for tokenizer.json files with
// a BPE model (byte-level BPE as in GPT-2 / Llama 3 / Qwen2, and SentencePiece-style BPE with
// byte fallback as in Llama 2 / Mistral). See docs/tokenizer.md for what is supported.
//
// Encode: added tokens are matched in the raw text first (never split); the text between
// them is normalized, pre-tokenized into words, and each word is BPE-encoded; with
// add_special_tokens the post-processor (or tokenizer_config.json's add_bos_token /
// add_eos_token when there is none) adds BOS/EOS.
// Decode: ids -> token strings -> the decoder chain, reproducing HF's output exactly.
//
// Immutable after Load/FromJson: every method is const and safe to call from any number of
// threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/added_tokens.h"
#include "common/tokenizer/bpe_model.h"
#include "common/tokenizer/decoder.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/post_processor.h"
#include "common/tokenizer/pre_tokenizer.h"

namespace tandem {

class Tokenizer {
 public:
  // Reads `dir`/tokenizer.json and, when present, `dir`/tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);

  // Builds a tokenizer from file contents; `tokenizer_config_json` may be empty. Errors are
  // InvalidArgument naming the file and JSON field.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      std::string_view tokenizer_json, std::string_view tokenizer_config_json);

  // Token ids of `text`. InvalidArgument (naming the byte offset) when text is not UTF-8.
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const;

  // Text of `ids` (always valid UTF-8). Ids that name no token (negative, >= vocab_size(),
  // or a gap in the vocab) are skipped, as HF does; Decode never fails.
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // Largest id of the vocab and added tokens, plus one.
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }

  // From tokenizer_config.json's bos_token / eos_token; nullopt when not configured.
  std::optional<int32_t> bos_token_id() const { return bos_token_id_; }
  std::optional<int32_t> eos_token_id() const { return eos_token_id_; }

  // Exact token string lookups (added tokens and the model vocab).
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Empty when `id` names no token.
  std::string_view IdToToken(int32_t id) const;
  // True for added tokens marked "special" (skipped by Decode with skip_special_tokens).
  bool IsSpecial(int32_t id) const;

 private:
  Tokenizer() = default;

  absl::Status Build(const tokenizer::Json& root, std::string_view config_json);
  absl::Status BuildIdTables(const std::vector<tokenizer::AddedToken>& added);
  absl::Status ApplyConfig(std::string_view config_json);
  absl::StatusOr<std::optional<int32_t>> ConfigTokenId(const std::optional<std::string>& token,
                                                       std::string_view field) const;
  bool HasToken(int32_t id) const;
  void EncodePlainText(std::string_view text, bool at_text_start, std::vector<int32_t>& ids) const;

  tokenizer::BpeModel model_;
  tokenizer::AddedTokenMatcher raw_added_tokens_;         // normalized == false
  tokenizer::AddedTokenMatcher normalized_added_tokens_;  // normalized == true
  tokenizer::Normalizer normalizer_;
  tokenizer::PreTokenizer pre_tokenizer_;
  tokenizer::PostProcessor post_processor_;
  tokenizer::Decoder decoder_;

  std::vector<std::string> id_to_token_;  // [vocab_size]
  std::vector<uint8_t> id_flags_;         // [vocab_size] kKnown | kSpecial
  tokenizer::StringMap<int32_t> added_token_to_id_;
  std::optional<int32_t> bos_token_id_;
  std::optional<int32_t> eos_token_id_;
};

}  // namespace tandem
