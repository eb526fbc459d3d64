#include "common/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/tokenizer/strings.h"
#include "common/status.h"
#include "common/tokenizer/tokenizer_config.h"
#include "common/tokenizer/utf8.h"

namespace tandem {
namespace {

using tokenizer::Json;
using tokenizer::JsonError;

constexpr uint8_t kKnown = 1;
constexpr uint8_t kSpecial = 2;
// Ids index dense tables; a hostile file must not make us allocate gigabytes.
constexpr int64_t kMaxVocabSize = int64_t{1} << 24;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(tokenizer::Cat("cannot open ", path.string()));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(tokenizer::Cat("cannot read ", path.string()));
  return contents.str();
}

absl::StatusOr<Json> ParseJson(std::string_view text) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    return absl::InvalidArgumentError(tokenizer::Cat("tokenizer.json: not valid JSON: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  const std::filesystem::path base(dir);
  TANDEM_ASSIGN_OR_RETURN(std::string tokenizer_json, ReadFile(base / "tokenizer.json"));
  std::string config_json;
  if (std::filesystem::exists(base / "tokenizer_config.json")) {
    TANDEM_ASSIGN_OR_RETURN(config_json, ReadFile(base / "tokenizer_config.json"));
  }
  return FromJson(tokenizer_json, config_json);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    std::string_view tokenizer_json, std::string_view tokenizer_config_json) {
  TANDEM_ASSIGN_OR_RETURN(Json root, ParseJson(tokenizer_json));
  if (!root.is_object()) return JsonError("(root)", "must be an object");
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  try {
    TANDEM_RETURN_IF_ERROR(tokenizer->Build(root, tokenizer_config_json));
  } catch (const Json::exception& e) {  // a type the field helpers did not anticipate
    return absl::InvalidArgumentError(tokenizer::Cat("tokenizer.json: malformed: ", e.what()));
  }
  return tokenizer;
}

absl::Status Tokenizer::Build(const Json& root, std::string_view config_json) {
  TANDEM_ASSIGN_OR_RETURN(const Json* model, tokenizer::FindField(root, "", "model"));
  if (model == nullptr) return JsonError("model", "is required");
  TANDEM_ASSIGN_OR_RETURN(model_, tokenizer::BpeModel::FromJson(*model, "model"));
  const Json null_json;
  auto field = [&](const char* name) -> const Json& {
    auto it = root.find(name);
    return it == root.end() ? null_json : *it;
  };
  TANDEM_ASSIGN_OR_RETURN(normalizer_, tokenizer::Normalizer::FromJson(field("normalizer"), "normalizer"));
  TANDEM_ASSIGN_OR_RETURN(pre_tokenizer_,
                          tokenizer::PreTokenizer::FromJson(field("pre_tokenizer"), "pre_tokenizer"));
  TANDEM_ASSIGN_OR_RETURN(post_processor_, tokenizer::PostProcessor::FromJson(
                                               field("post_processor"), "post_processor"));
  TANDEM_ASSIGN_OR_RETURN(decoder_, tokenizer::Decoder::FromJson(field("decoder"), "decoder"));
  TANDEM_ASSIGN_OR_RETURN(std::vector<tokenizer::AddedToken> added,
                          tokenizer::ParseAddedTokens(root));
  TANDEM_RETURN_IF_ERROR(BuildIdTables(added));
  raw_added_tokens_ = tokenizer::AddedTokenMatcher(added, /*normalized=*/false);
  normalized_added_tokens_ = tokenizer::AddedTokenMatcher(added, /*normalized=*/true);
  for (int32_t id : post_processor_.SpecialIds()) {
    if (!HasToken(id)) {
      return JsonError("post_processor", tokenizer::Cat("uses id ", id, ", which names no token"));
    }
  }
  return ApplyConfig(config_json);
}

absl::Status Tokenizer::BuildIdTables(const std::vector<tokenizer::AddedToken>& added) {
  int64_t size = 0;
  for (const auto& [token, id] : model_.vocab()) size = std::max<int64_t>(size, int64_t{id} + 1);
  for (const auto& token : added) size = std::max<int64_t>(size, int64_t{token.id} + 1);
  if (size > kMaxVocabSize) {
    return JsonError("model.vocab", tokenizer::Cat("ids must be below ", kMaxVocabSize, ", got ", size - 1));
  }
  id_to_token_.assign(size, std::string());
  id_flags_.assign(size, 0);
  for (const auto& [token, id] : model_.vocab()) {
    id_to_token_[id] = token;
    id_flags_[id] = kKnown;
  }
  absl::flat_hash_map<int32_t, std::string_view> added_by_id;
  for (size_t i = 0; i < added.size(); ++i) {
    const tokenizer::AddedToken& token = added[i];
    auto [it, inserted] = added_by_id.emplace(token.id, token.content);
    if (!inserted && it->second != token.content) {
      return JsonError(tokenizer::JsonIndexPath("added_tokens", i),
                       tokenizer::Cat("reuses id ", token.id, " of \"", it->second, "\""));
    }
    // An added token overrides the vocab's string for its id, as HF's decode does.
    id_to_token_[token.id] = token.content;
    id_flags_[token.id] = kKnown | (token.special ? kSpecial : 0);
    added_token_to_id_.insert_or_assign(token.content, token.id);
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::ApplyConfig(std::string_view config_json) {
  TANDEM_ASSIGN_OR_RETURN(tokenizer::TokenizerConfig config,
                          tokenizer::ParseTokenizerConfig(config_json));
  TANDEM_ASSIGN_OR_RETURN(bos_token_id_, ConfigTokenId(config.bos_token, "bos_token"));
  TANDEM_ASSIGN_OR_RETURN(eos_token_id_, ConfigTokenId(config.eos_token, "eos_token"));
  if (post_processor_.is_null() && (config.add_bos_token || config.add_eos_token)) {
    if ((config.add_bos_token && !bos_token_id_) || (config.add_eos_token && !eos_token_id_)) {
      return absl::InvalidArgumentError(
          "tokenizer_config.json: add_bos_token/add_eos_token is set but the token is not");
    }
    post_processor_ =
        tokenizer::PostProcessor::BosEos(config.add_bos_token ? bos_token_id_ : std::nullopt,
                                         config.add_eos_token ? eos_token_id_ : std::nullopt);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int32_t>> Tokenizer::ConfigTokenId(
    const std::optional<std::string>& token, std::string_view field) const {
  if (!token) return std::optional<int32_t>();
  std::optional<int32_t> id = TokenToId(*token);
  if (!id) {
    return absl::InvalidArgumentError(tokenizer::Cat("tokenizer_config.json: ", field, " \"", *token,
                                                   "\" is not a token of tokenizer.json"));
  }
  return id;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       bool add_special_tokens) const {
  if (std::optional<size_t> bad = tokenizer::FirstInvalidUtf8Offset(text)) {
    return absl::InvalidArgumentError(
        tokenizer::Cat("text is not valid UTF-8 at byte offset ", *bad));
  }
  std::vector<int32_t> ids;
  for (const tokenizer::TextSegment& segment : raw_added_tokens_.Split(text)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
    } else {
      EncodePlainText(segment.text, segment.offset == 0, ids);
    }
  }
  return post_processor_.Process(std::move(ids), add_special_tokens);
}

void Tokenizer::EncodePlainText(std::string_view text, bool at_text_start,
                                std::vector<int32_t>& ids) const {
  const std::string normalized = normalizer_.Normalize(text);
  for (const tokenizer::TextSegment& segment : normalized_added_tokens_.Split(normalized)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    const bool starts_text = at_text_start && segment.offset == 0;
    for (const std::string& word : pre_tokenizer_.PreTokenize(segment.text, starts_text)) {
      model_.Tokenize(word, ids);
    }
  }
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (!HasToken(id)) continue;
    if (skip_special_tokens && (id_flags_[id] & kSpecial) != 0) continue;
    tokens.push_back(id_to_token_[id]);
  }
  return decoder_.Decode(std::move(tokens));
}

bool Tokenizer::HasToken(int32_t id) const {
  return id >= 0 && id < vocab_size() && (id_flags_[id] & kKnown) != 0;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (auto it = added_token_to_id_.find(token); it != added_token_to_id_.end()) return it->second;
  if (auto it = model_.vocab().find(token); it != model_.vocab().end()) return it->second;
  return std::nullopt;
}

std::string_view Tokenizer::IdToToken(int32_t id) const {
  return HasToken(id) ? std::string_view(id_to_token_[id]) : std::string_view();
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return HasToken(id) && (id_flags_[id] & kSpecial) != 0;
}

}  // namespace tandem
