#include "common/tokenizer/post_processor.h"

#include <limits>

#include "common/tokenizer/strings.h"
#include "common/status.h"

namespace tandem::tokenizer {

absl::StatusOr<PostProcessor> PostProcessor::FromJson(const Json& json, std::string_view path) {
  PostProcessor processor;
  if (json.is_null()) return processor;
  processor.is_null_ = false;
  TANDEM_RETURN_IF_ERROR(processor.AddJson(json, path));
  return processor;
}

PostProcessor PostProcessor::BosEos(std::optional<int32_t> bos, std::optional<int32_t> eos) {
  PostProcessor processor;
  Template t;
  if (bos) t.push_back({false, {*bos}});
  t.push_back({true, {}});
  if (eos) t.push_back({false, {*eos}});
  processor.templates_.push_back(std::move(t));
  return processor;
}

absl::Status PostProcessor::AddJson(const Json& json, std::string_view path) {
  TANDEM_ASSIGN_OR_RETURN(std::string type, RequireString(json, path, "type"));
  if (type == "Sequence") {
    const std::string list_path = JsonPath(path, "processors");
    TANDEM_ASSIGN_OR_RETURN(const Json* list, RequireArray(json, path, "processors"));
    for (size_t i = 0; i < list->size(); ++i) {
      TANDEM_RETURN_IF_ERROR(AddJson((*list)[i], JsonIndexPath(list_path, i)));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();  // trims offsets only; ids unchanged
  if (type == "TemplateProcessing") return AddTemplate(json, path);
  return UnsupportedType(path, type, "Sequence, ByteLevel, TemplateProcessing");
}

absl::Status PostProcessor::AddTemplate(const Json& json, std::string_view path) {
  const std::string single_path = JsonPath(path, "single");
  TANDEM_ASSIGN_OR_RETURN(const Json* single, RequireArray(json, path, "single"));
  TANDEM_ASSIGN_OR_RETURN(const Json* special_tokens, FindField(json, path, "special_tokens"));
  const Json empty = Json::object();
  Template t;
  int num_sequences = 0;
  for (size_t i = 0; i < single->size(); ++i) {
    TANDEM_ASSIGN_OR_RETURN(Item item,
                            ParseItem((*single)[i], special_tokens ? *special_tokens : empty,
                                      JsonIndexPath(single_path, i)));
    num_sequences += item.is_sequence ? 1 : 0;
    t.push_back(std::move(item));
  }
  if (num_sequences != 1) return JsonError(single_path, "must contain exactly one Sequence item");
  templates_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::StatusOr<PostProcessor::Item> PostProcessor::ParseItem(const Json& item,
                                                             const Json& special_tokens,
                                                             std::string_view path) {
  TANDEM_ASSIGN_OR_RETURN(const Json* sequence, FindField(item, path, "Sequence"));
  if (sequence != nullptr) {
    const std::string seq_path = JsonPath(path, "Sequence");
    TANDEM_ASSIGN_OR_RETURN(std::string id, RequireString(*sequence, seq_path, "id"));
    if (id != "A") return JsonError(JsonPath(seq_path, "id"), "must be \"A\" in a single template");
    return Item{true, {}};
  }
  const std::string special_path = JsonPath(path, "SpecialToken");
  TANDEM_ASSIGN_OR_RETURN(const Json* special, FindField(item, path, "SpecialToken"));
  if (special == nullptr) return JsonError(path, "must hold a Sequence or a SpecialToken");
  TANDEM_ASSIGN_OR_RETURN(std::string name, RequireString(*special, special_path, "id"));
  const std::string entry_path = JsonPath("special_tokens", name);
  TANDEM_ASSIGN_OR_RETURN(const Json* entry, FindField(special_tokens, "special_tokens", name));
  if (entry == nullptr) {
    return JsonError(special_path, Cat("names \"", name, "\", which special_tokens lacks"));
  }
  TANDEM_ASSIGN_OR_RETURN(const Json* ids, RequireArray(*entry, entry_path, "ids"));
  Item out{false, {}};
  for (size_t i = 0; i < ids->size(); ++i) {
    const Json& id = (*ids)[i];
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return JsonError(JsonIndexPath(JsonPath(entry_path, "ids"), i), "must be a token id");
    }
    out.ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  return out;
}

std::vector<int32_t> PostProcessor::Process(std::vector<int32_t> ids,
                                            bool add_special_tokens) const {
  if (!add_special_tokens) return ids;
  for (const Template& t : templates_) {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Item& item : t) {
      const std::vector<int32_t>& source = item.is_sequence ? ids : item.ids;
      out.insert(out.end(), source.begin(), source.end());
    }
    ids = std::move(out);
  }
  return ids;
}

std::vector<int32_t> PostProcessor::SpecialIds() const {
  std::vector<int32_t> ids;
  for (const Template& t : templates_) {
    for (const Item& item : t) ids.insert(ids.end(), item.ids.begin(), item.ids.end());
  }
  return ids;
}

}  // namespace tandem::tokenizer
