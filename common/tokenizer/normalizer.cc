#include "common/tokenizer/normalizer.h"

#include "common/status.h"
#include "common/tokenizer/overloaded.h"

namespace tandem::tokenizer {
absl::StatusOr<Normalizer> Normalizer::FromJson(const Json& json, std::string_view path) {
  Normalizer normalizer;
  if (!json.is_null()) TANDEM_RETURN_IF_ERROR(normalizer.AddJson(json, path));
  return normalizer;
}

absl::Status Normalizer::AddJson(const Json& json, std::string_view path) {
  TANDEM_ASSIGN_OR_RETURN(std::string type, RequireString(json, path, "type"));
  if (type == "Sequence") {
    const std::string list_path = JsonPath(path, "normalizers");
    TANDEM_ASSIGN_OR_RETURN(const Json* list, RequireArray(json, path, "normalizers"));
    for (size_t i = 0; i < list->size(); ++i) {
      TANDEM_RETURN_IF_ERROR(AddJson((*list)[i], JsonIndexPath(list_path, i)));
    }
    return absl::OkStatus();
  }
  if (type == "Prepend") {
    TANDEM_ASSIGN_OR_RETURN(std::string prepend, RequireString(json, path, "prepend"));
    steps_.push_back(Prepend{std::move(prepend)});
    return absl::OkStatus();
  }
  if (type == "Replace") {
    TANDEM_ASSIGN_OR_RETURN(Pattern pattern, RequirePattern(json, path, "pattern"));
    TANDEM_ASSIGN_OR_RETURN(std::string content, RequireString(json, path, "content"));
    steps_.push_back(Replace{std::move(pattern), std::move(content)});
    return absl::OkStatus();
  }
  return UnsupportedType(path, type, "Sequence, Prepend, Replace");
}

std::string Normalizer::Normalize(std::string_view text) const {
  std::string current(text);
  for (const Step& step : steps_) {
    current = std::visit(
        Overloaded{
            [&](const Prepend& p) { return current.empty() ? current : p.prepend + current; },
            [&](const Replace& r) { return ReplaceAll(r.pattern, current, r.content); },
        },
        step);
  }
  return current;
}

}  // namespace tandem::tokenizer
