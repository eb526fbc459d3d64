#include "common/tokenizer/metaspace.h"

#include "common/tokenizer/strings.h"
#include "common/status.h"

namespace tandem::tokenizer {

absl::StatusOr<MetaspaceOptions> ParseMetaspaceOptions(const Json& json, std::string_view path) {
  MetaspaceOptions options;
  TANDEM_ASSIGN_OR_RETURN(options.replacement, RequireChar(json, path, "replacement"));
  TANDEM_ASSIGN_OR_RETURN(options.split, OptionalBool(json, path, "split", true));
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> scheme,
                          OptionalString(json, path, "prepend_scheme"));
  if (!scheme) {
    TANDEM_ASSIGN_OR_RETURN(bool add_prefix_space,
                            OptionalBool(json, path, "add_prefix_space", true));
    options.prepend_scheme = add_prefix_space ? PrependScheme::kAlways : PrependScheme::kNever;
  } else if (*scheme == "first") {
    options.prepend_scheme = PrependScheme::kFirst;
  } else if (*scheme == "always") {
    options.prepend_scheme = PrependScheme::kAlways;
  } else if (*scheme == "never") {
    options.prepend_scheme = PrependScheme::kNever;
  } else {
    return JsonError(JsonPath(path, "prepend_scheme"),
                     Cat("\"", *scheme, "\" is not one of first, always, never"));
  }
  return options;
}

}  // namespace tandem::tokenizer
