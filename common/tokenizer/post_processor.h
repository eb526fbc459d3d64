// tokenizer.json "post_processor": adds special tokens around an encoded sequence when
// Encode is called with add_special_tokens. Supported types: TemplateProcessing (the
// "single" template: SpecialToken and Sequence "A" items), ByteLevel (offsets only: a no-op
// on ids), Sequence. Sequences are flattened at load. Pair templates are not used.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_fields.h"

namespace tandem::tokenizer {

class PostProcessor {
 public:
  // Parses the "post_processor" value (null: no post-processor, see is_null()).
  static absl::StatusOr<PostProcessor> FromJson(const Json& json, std::string_view path);

  // The tokenizer_config.json fallback used when tokenizer.json has no post-processor:
  // optional BOS before and EOS after the sequence.
  static PostProcessor BosEos(std::optional<int32_t> bos, std::optional<int32_t> eos);

  bool is_null() const { return is_null_; }

  // `ids` with the templates' special tokens around it (unchanged when !add_special_tokens).
  std::vector<int32_t> Process(std::vector<int32_t> ids, bool add_special_tokens) const;

  // Every special id any template can emit (for validation against the vocab).
  std::vector<int32_t> SpecialIds() const;

 private:
  // One template item: the input sequence, or a run of special token ids.
  struct Item {
    bool is_sequence;
    std::vector<int32_t> ids;
  };
  using Template = std::vector<Item>;

  absl::Status AddJson(const Json& json, std::string_view path);
  absl::Status AddTemplate(const Json& json, std::string_view path);
  static absl::StatusOr<Item> ParseItem(const Json& item, const Json& special_tokens,
                                        std::string_view path);

  bool is_null_ = true;
  std::vector<Template> templates_;  // applied in order
};

}  // namespace tandem::tokenizer
