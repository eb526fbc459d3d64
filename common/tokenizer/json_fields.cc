#include "common/tokenizer/json_fields.h"

#include "common/tokenizer/strings.h"
#include "common/status.h"
#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {

std::string JsonPath(std::string_view parent, std::string_view field) {
  return parent.empty() ? std::string(field) : Cat(parent, ".", field);
}

std::string JsonIndexPath(std::string_view parent, size_t index) {
  return Cat(parent, "[", index, "]");
}

absl::Status JsonError(std::string_view path, std::string_view message) {
  return absl::InvalidArgumentError(Cat("tokenizer.json: ", path, " ", message));
}

absl::Status UnsupportedType(std::string_view path, std::string_view type,
                             std::string_view supported) {
  return JsonError(JsonPath(path, "type"),
                   Cat("\"", type, "\" is not supported (supported: ", supported, ")"));
}

absl::StatusOr<const Json*> FindField(const Json& obj, std::string_view path,
                                      std::string_view field) {
  if (!obj.is_object()) return JsonError(path.empty() ? "(root)" : path, "must be an object");
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<std::string>> OptionalString(const Json& obj, std::string_view path,
                                                          std::string_view field) {
  TANDEM_ASSIGN_OR_RETURN(const Json* value, FindField(obj, path, field));
  if (value == nullptr) return std::optional<std::string>();
  if (!value->is_string()) return JsonError(JsonPath(path, field), "must be a string");
  return std::optional<std::string>(value->get<std::string>());
}

absl::StatusOr<std::string> RequireString(const Json& obj, std::string_view path,
                                          std::string_view field) {
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> value, OptionalString(obj, path, field));
  if (!value) return JsonError(JsonPath(path, field), "is required");
  return *std::move(value);
}

absl::StatusOr<bool> OptionalBool(const Json& obj, std::string_view path, std::string_view field,
                                  bool default_value) {
  TANDEM_ASSIGN_OR_RETURN(const Json* value, FindField(obj, path, field));
  if (value == nullptr) return default_value;
  if (!value->is_boolean()) return JsonError(JsonPath(path, field), "must be true or false");
  return value->get<bool>();
}

absl::StatusOr<int64_t> RequireInt(const Json& obj, std::string_view path, std::string_view field,
                                   int64_t min_value, int64_t max_value) {
  TANDEM_ASSIGN_OR_RETURN(const Json* value, FindField(obj, path, field));
  const std::string full = JsonPath(path, field);
  if (value == nullptr) return JsonError(full, "is required");
  if (!value->is_number_integer()) return JsonError(full, "must be an integer");
  const bool is_unsigned = value->is_number_unsigned();
  if (is_unsigned && value->get<uint64_t>() > static_cast<uint64_t>(max_value)) {
    return JsonError(full, Cat("must be in [", min_value, ", ", max_value, "]"));
  }
  const int64_t v = is_unsigned ? static_cast<int64_t>(value->get<uint64_t>()) : value->get<int64_t>();
  if (v < min_value || v > max_value) {
    return JsonError(full, Cat("must be in [", min_value, ", ", max_value, "], got ", v));
  }
  return v;
}

absl::StatusOr<const Json*> RequireArray(const Json& obj, std::string_view path,
                                         std::string_view field) {
  TANDEM_ASSIGN_OR_RETURN(const Json* value, FindField(obj, path, field));
  if (value == nullptr) return JsonError(JsonPath(path, field), "is required");
  if (!value->is_array()) return JsonError(JsonPath(path, field), "must be an array");
  return value;
}

absl::StatusOr<std::string> RequireChar(const Json& obj, std::string_view path,
                                        std::string_view field) {
  TANDEM_ASSIGN_OR_RETURN(std::string value, RequireString(obj, path, field));
  if (value.empty() || FirstInvalidUtf8Offset(value) || CharLength(value, 0) != value.size()) {
    return JsonError(JsonPath(path, field), "must be exactly one character");
  }
  return value;
}

absl::StatusOr<Pattern> RequirePattern(const Json& obj, std::string_view path,
                                       std::string_view field) {
  TANDEM_ASSIGN_OR_RETURN(const Json* value, FindField(obj, path, field));
  const std::string full = JsonPath(path, field);
  if (value == nullptr) return JsonError(full, "is required");
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> literal, OptionalString(*value, full, "String"));
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> regex, OptionalString(*value, full, "Regex"));
  if (literal.has_value() == regex.has_value()) {
    return JsonError(full, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  Pattern pattern;
  if (literal) {
    if (literal->empty()) return JsonError(JsonPath(full, "String"), "must not be empty");
    pattern.literal = *std::move(literal);
    return pattern;
  }
  auto compiled = Regex::Compile(*regex);
  if (!compiled.ok()) return JsonError(JsonPath(full, "Regex"), std::string(compiled.status().message()));
  pattern.regex = *std::move(compiled);
  return pattern;
}

}  // namespace tandem::tokenizer
