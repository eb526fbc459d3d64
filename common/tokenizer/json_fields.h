// Typed, bounds-checked access to tokenizer.json fields. Every error is InvalidArgument and
// names the file and the JSON path, e.g. `tokenizer.json: model.merges[3] ...`.
// Callers pass the path of `obj` ("" for the root); helpers append the field name.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/regex.h"
#include "nlohmann/json.hpp"

namespace tandem::tokenizer {

using Json = nlohmann::json;

// "parent.field", or "field" when parent is empty.
std::string JsonPath(std::string_view parent, std::string_view field);
// "parent[index]".
std::string JsonIndexPath(std::string_view parent, size_t index);

// InvalidArgument("tokenizer.json: <path> <message>").
absl::Status JsonError(std::string_view path, std::string_view message);

// InvalidArgument naming an unsupported `type` at `path` and the supported list.
absl::Status UnsupportedType(std::string_view path, std::string_view type,
                             std::string_view supported);

// The field's value, or nullptr when it is missing or null. Errors if obj is not an object.
absl::StatusOr<const Json*> FindField(const Json& obj, std::string_view path,
                                      std::string_view field);

absl::StatusOr<std::string> RequireString(const Json& obj, std::string_view path,
                                          std::string_view field);
absl::StatusOr<std::optional<std::string>> OptionalString(const Json& obj, std::string_view path,
                                                          std::string_view field);
absl::StatusOr<bool> OptionalBool(const Json& obj, std::string_view path, std::string_view field,
                                  bool default_value);
// An integer in [min_value, max_value].
absl::StatusOr<int64_t> RequireInt(const Json& obj, std::string_view path, std::string_view field,
                                   int64_t min_value, int64_t max_value);
absl::StatusOr<const Json*> RequireArray(const Json& obj, std::string_view path,
                                         std::string_view field);

// A single code point given as a one-character string (Strip.content, Metaspace.replacement).
absl::StatusOr<std::string> RequireChar(const Json& obj, std::string_view path,
                                        std::string_view field);

// `{"String": "..."}` or `{"Regex": "..."}` at obj[field].
absl::StatusOr<Pattern> RequirePattern(const Json& obj, std::string_view path,
                                       std::string_view field);

}  // namespace tandem::tokenizer
