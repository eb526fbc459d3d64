#include "common/tokenizer/tokenizer_config.h"

#include "common/tokenizer/strings.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tandem::tokenizer {
namespace {

using Json = nlohmann::json;

absl::Status ConfigError(std::string_view field, std::string_view message) {
  return absl::InvalidArgumentError(Cat("tokenizer_config.json: ", field, " ", message));
}

absl::StatusOr<std::optional<std::string>> TokenField(const Json& root, const std::string& field) {
  auto it = root.find(field);
  if (it == root.end() || it->is_null()) return std::optional<std::string>();
  if (it->is_string()) return std::optional<std::string>(it->get<std::string>());
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) {
      return std::optional<std::string>(content->get<std::string>());
    }
  }
  return ConfigError(field, "must be a string or an object with a string \"content\"");
}

absl::StatusOr<bool> BoolField(const Json& root, const std::string& field) {
  auto it = root.find(field);
  if (it == root.end() || it->is_null()) return false;
  if (!it->is_boolean()) return ConfigError(field, "must be true or false");
  return it->get<bool>();
}

}  // namespace

absl::StatusOr<TokenizerConfig> ParseTokenizerConfig(std::string_view json_text) {
  TokenizerConfig config;
  if (json_text.empty()) return config;
  const Json root = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return ConfigError("(file)", "is not valid JSON");
  if (!root.is_object()) return ConfigError("(root)", "must be an object");
  TANDEM_ASSIGN_OR_RETURN(config.bos_token, TokenField(root, "bos_token"));
  TANDEM_ASSIGN_OR_RETURN(config.eos_token, TokenField(root, "eos_token"));
  TANDEM_ASSIGN_OR_RETURN(config.add_bos_token, BoolField(root, "add_bos_token"));
  TANDEM_ASSIGN_OR_RETURN(config.add_eos_token, BoolField(root, "add_eos_token"));
  return config;
}

}  // namespace tandem::tokenizer
