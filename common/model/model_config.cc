#include "common/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using json = nlohmann::json;

constexpr char kLlamaArchitecture[] = "LlamaForCausalLM";
// Sizes are bounded so that products such as vocab_size * hidden_size fit in int64.
constexpr int64_t kMaxSize = std::numeric_limits<int32_t>::max();

// A short rendering of a JSON value for error messages.
std::string Describe(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return absl::StrCat(value.type_name(), " ", text);
}

// The value as int64; nullopt when it is not an integer or does not fit.
std::optional<int64_t> AsInt64(const json& value) {
  if (value.is_number_unsigned()) {
    uint64_t unsigned_value = value.get<uint64_t>();
    if (unsigned_value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    return static_cast<int64_t>(unsigned_value);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  return std::nullopt;
}

// Reads typed fields of one JSON object. Absent and null fields read as nullopt; a field of
// the wrong type is an InvalidArgument naming `source` and the field (with `prefix`).
class FieldReader {
 public:
  FieldReader(const json& object, absl::string_view source, std::string prefix = "")
      : object_(object), source_(source), prefix_(std::move(prefix)) {}

  // The field's value; null when absent or JSON null.
  const json* Find(absl::string_view key) const {
    auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  bool HasOnlyKeys(std::initializer_list<std::string_view> keys) const {
    for (const auto& [key, value] : object_.items()) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) return false;
    }
    return true;
  }
  std::string Name(absl::string_view key) const { return absl::StrCat(prefix_, key); }
  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", message));
  }
  absl::Status TypeError(absl::string_view key, absl::string_view expected, const json& got) const {
    return Error(absl::StrCat(Name(key), " must be ", expected, ", got ", Describe(got)));
  }

  absl::StatusOr<std::optional<int64_t>> Int(absl::string_view key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    std::optional<int64_t> as_int = AsInt64(*value);
    if (!as_int) return TypeError(key, "an integer (int64)", *value);
    return *as_int;
  }
  absl::StatusOr<std::optional<double>> Number(absl::string_view key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_number()) return TypeError(key, "a number", *value);
    return value->get<double>();
  }
  absl::StatusOr<std::optional<bool>> Bool(absl::string_view key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_boolean()) return TypeError(key, "a boolean", *value);
    return value->get<bool>();
  }
  absl::StatusOr<std::optional<std::string>> String(absl::string_view key) const {
    const json* value = Find(key);
    if (value == nullptr) return std::nullopt;
    if (!value->is_string()) return TypeError(key, "a string", *value);
    return value->get<std::string>();
  }

  // An integer in [min_value, max_value]; `fallback` when absent (required when nullopt).
  absl::StatusOr<int64_t> IntIn(absl::string_view key, int64_t min_value, int64_t max_value,
                                std::optional<int64_t> fallback = std::nullopt) const {
    TANDEM_ASSIGN_OR_RETURN(std::optional<int64_t> value, Int(key));
    if (!value) value = fallback;
    if (!value) return Error(absl::StrCat(Name(key), " is required"));
    if (*value < min_value || *value > max_value) {
      return Error(
          absl::StrCat(Name(key), " must be in [", min_value, ", ", max_value, "], got ", *value));
    }
    return *value;
  }
  // A finite number > 0 (as float); `fallback` when absent (required when nullopt).
  absl::StatusOr<float> PositiveFloat(absl::string_view key,
                                      std::optional<double> fallback = std::nullopt) const {
    TANDEM_ASSIGN_OR_RETURN(std::optional<double> value, Number(key));
    if (!value) value = fallback;
    if (!value) return Error(absl::StrCat(Name(key), " is required"));
    float as_float = static_cast<float>(*value);
    if (!std::isfinite(as_float) || !(as_float > 0.0f)) {
      return Error(absl::StrCat(Name(key), " must be a finite number > 0, got ", *value));
    }
    return as_float;
  }

 private:
  const json& object_;
  absl::string_view source_;
  std::string prefix_;
};

absl::StatusOr<std::string> ParseArchitecture(const FieldReader& r) {
  if (const json* architectures = r.Find("architectures")) {
    if (!architectures->is_array() || architectures->empty() || !(*architectures)[0].is_string()) {
      return r.TypeError("architectures", "a non-empty list of strings", *architectures);
    }
    std::string name = (*architectures)[0].get<std::string>();
    if (name == kLlamaArchitecture) return name;
    return r.Error(absl::StrCat("architecture \"", name,
                                "\" is not supported (supported: ", kLlamaArchitecture, ")"));
  }
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> model_type, r.String("model_type"));
  if (!model_type) {
    return r.Error(absl::StrCat(
        "neither architectures nor model_type is set (supported: ", kLlamaArchitecture, ")"));
  }
  if (*model_type == "llama") return std::string(kLlamaArchitecture);
  return r.Error(
      absl::StrCat("model_type \"", *model_type, "\" is not supported (supported: llama)"));
}

absl::Status ParseSizes(const FieldReader& r, ModelConfig& c) {
  TANDEM_ASSIGN_OR_RETURN(c.vocab_size, r.IntIn("vocab_size", 1, kMaxSize));
  TANDEM_ASSIGN_OR_RETURN(c.hidden_size, r.IntIn("hidden_size", 1, kMaxSize));
  TANDEM_ASSIGN_OR_RETURN(c.intermediate_size, r.IntIn("intermediate_size", 1, kMaxSize));
  TANDEM_ASSIGN_OR_RETURN(c.num_layers, r.IntIn("num_hidden_layers", 1, kMaxSize));
  TANDEM_ASSIGN_OR_RETURN(c.max_position_embeddings,
                          r.IntIn("max_position_embeddings", 1, kMaxSize));
  return absl::OkStatus();
}

absl::Status ParseHeads(const FieldReader& r, ModelConfig& c) {
  TANDEM_ASSIGN_OR_RETURN(c.num_heads, r.IntIn("num_attention_heads", 1, kMaxSize));
  TANDEM_ASSIGN_OR_RETURN(c.num_kv_heads, r.IntIn("num_key_value_heads", 1, kMaxSize, c.num_heads));
  if (c.num_heads % c.num_kv_heads != 0) {
    return r.Error(absl::StrCat("num_attention_heads (", c.num_heads,
                                ") must be divisible by num_key_value_heads (", c.num_kv_heads,
                                ")"));
  }
  std::optional<int64_t> default_head_dim;
  if (c.hidden_size % c.num_heads == 0) default_head_dim = c.hidden_size / c.num_heads;
  if (!default_head_dim && r.Find("head_dim") == nullptr) {
    return r.Error(absl::StrCat("hidden_size (", c.hidden_size,
                                ") must be divisible by num_attention_heads (", c.num_heads,
                                ") when head_dim is not set"));
  }
  TANDEM_ASSIGN_OR_RETURN(c.head_dim, r.IntIn("head_dim", 1, kMaxSize, default_head_dim));
  if (c.head_dim % 2 != 0) {
    return r.Error(absl::StrCat("head_dim must be even (RoPE rotates pairs), got ", c.head_dim));
  }
  return absl::OkStatus();
}

absl::StatusOr<RopeScaling> ParseLlama3Scaling(const FieldReader& r) {
  RopeScaling scaling;
  scaling.type = RopeScaling::Type::kLlama3;
  TANDEM_ASSIGN_OR_RETURN(scaling.factor, r.PositiveFloat("factor"));
  TANDEM_ASSIGN_OR_RETURN(scaling.low_freq_factor, r.PositiveFloat("low_freq_factor"));
  TANDEM_ASSIGN_OR_RETURN(scaling.high_freq_factor, r.PositiveFloat("high_freq_factor"));
  TANDEM_ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                          r.IntIn("original_max_position_embeddings", 1, kMaxSize));
  if (scaling.factor < 1.0f) {
    return r.Error(absl::StrCat(r.Name("factor"), " must be >= 1, got ", scaling.factor));
  }
  if (!(scaling.low_freq_factor < scaling.high_freq_factor)) {
    return r.Error(absl::StrCat(r.Name("low_freq_factor"), " (", scaling.low_freq_factor,
                                ") must be < ", r.Name("high_freq_factor"), " (",
                                scaling.high_freq_factor, ")"));
  }
  return scaling;
}

// One rope block (rope_scaling or rope_parameters), read through `r` with its prefix.
absl::StatusOr<RopeScaling> ParseRopeBlock(const FieldReader& r) {
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> type, r.String("rope_type"));
  std::string type_key = "rope_type";
  if (!type) {
    TANDEM_ASSIGN_OR_RETURN(type, r.String("type"));
    type_key = "type";
  }
  if (!type) {
    // A block that only restates rope_theta (transformers v5) means plain RoPE.
    if (r.HasOnlyKeys({"rope_theta"})) return RopeScaling{};
    return r.Error(absl::StrCat(r.Name("rope_type"), " is required"));
  }
  if (*type == "default") return RopeScaling{};
  if (*type == "llama3") return ParseLlama3Scaling(r);
  return r.Error(absl::StrCat(r.Name(type_key), " \"", *type,
                              "\" is not supported (supported: default, llama3)"));
}

// rope_theta comes from rope_parameters (v5), else the top level, else rope_scaling.
absl::Status ParseRope(const FieldReader& r, absl::string_view source, ModelConfig& c) {
  const json* parameters = r.Find("rope_parameters");
  const json* scaling = r.Find("rope_scaling");
  const char* block_name = parameters ? "rope_parameters" : "rope_scaling";
  const json* block = parameters ? parameters : scaling;
  std::optional<double> theta;
  if (block != nullptr) {
    if (!block->is_object()) return r.TypeError(block_name, "an object or null", *block);
    FieldReader block_reader(*block, source, absl::StrCat(block_name, "."));
    TANDEM_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeBlock(block_reader));
    TANDEM_ASSIGN_OR_RETURN(theta, block_reader.Number("rope_theta"));
    if (theta) {
      TANDEM_ASSIGN_OR_RETURN(c.rope_theta, block_reader.PositiveFloat("rope_theta"));
    }
  }
  if (!theta || parameters == nullptr) {
    TANDEM_ASSIGN_OR_RETURN(c.rope_theta, r.PositiveFloat("rope_theta", theta.value_or(10000.0)));
  }
  return absl::OkStatus();
}

absl::Status ParseFlags(const FieldReader& r, ModelConfig& c) {
  TANDEM_ASSIGN_OR_RETURN(c.rms_norm_eps, r.PositiveFloat("rms_norm_eps", 1e-6));
  TANDEM_ASSIGN_OR_RETURN(std::optional<bool> tie, r.Bool("tie_word_embeddings"));
  c.tie_word_embeddings = tie.value_or(false);
  TANDEM_ASSIGN_OR_RETURN(std::optional<bool> bias, r.Bool("attention_bias"));
  c.attention_bias = bias.value_or(false);
  std::string dtype_key = r.Find("torch_dtype") ? "torch_dtype" : "dtype";
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> dtype, r.String(dtype_key));
  if (dtype) {
    std::optional<DType> parsed = ParseTorchDType(*dtype);
    if (!parsed) {
      return r.Error(absl::StrCat(dtype_key, " \"", *dtype,
                                  "\" is not supported (supported: float32, bfloat16, float16)"));
    }
    c.torch_dtype = *parsed;
  }
  return absl::OkStatus();
}

absl::Status CheckTokenId(const FieldReader& r, absl::string_view key, int64_t id,
                          int64_t vocab_size) {
  if (id < 0 || id >= vocab_size) {
    return r.Error(absl::StrCat(r.Name(key), " must be in [0, ", vocab_size, "), got ", id));
  }
  return absl::OkStatus();
}

// Appends eos_token_id (int, list of ints, or null) to `ids`, skipping ids already there.
absl::Status AppendEosIds(const FieldReader& r, int64_t vocab_size, std::vector<int32_t>& ids) {
  const json* value = r.Find("eos_token_id");
  if (value == nullptr) return absl::OkStatus();
  json list = value->is_array() ? *value : json::array({*value});
  for (const json& item : list) {
    std::optional<int64_t> id = AsInt64(item);
    if (!id) return r.TypeError("eos_token_id", "an integer or a list of integers", *value);
    TANDEM_RETURN_IF_ERROR(CheckTokenId(r, "eos_token_id", *id, vocab_size));
    if (std::find(ids.begin(), ids.end(), *id) == ids.end()) {
      ids.push_back(static_cast<int32_t>(*id));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int32_t>> ParseBosId(const FieldReader& r, int64_t vocab_size) {
  TANDEM_ASSIGN_OR_RETURN(std::optional<int64_t> bos, r.Int("bos_token_id"));
  if (!bos) return std::nullopt;
  TANDEM_RETURN_IF_ERROR(CheckTokenId(r, "bos_token_id", *bos, vocab_size));
  return static_cast<int32_t>(*bos);
}

absl::StatusOr<ModelConfig> ParseRoot(const FieldReader& r, absl::string_view source) {
  ModelConfig c;
  TANDEM_ASSIGN_OR_RETURN(c.architecture, ParseArchitecture(r));
  TANDEM_RETURN_IF_ERROR(ParseSizes(r, c));
  TANDEM_RETURN_IF_ERROR(ParseHeads(r, c));
  TANDEM_RETURN_IF_ERROR(ParseRope(r, source, c));
  TANDEM_RETURN_IF_ERROR(ParseFlags(r, c));
  TANDEM_ASSIGN_OR_RETURN(c.bos_token_id, ParseBosId(r, c.vocab_size));
  TANDEM_RETURN_IF_ERROR(AppendEosIds(r, c.vocab_size, c.eos_token_ids));
  return c;
}

// Parses `text`, which must be a JSON object.
absl::StatusOr<json> ParseObject(std::string_view text, absl::string_view source) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": must be a JSON object, got ", root.type_name()));
  }
  return root;
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view source_view) {
  absl::string_view source(source_view.data(), source_view.size());
  TANDEM_ASSIGN_OR_RETURN(json root, ParseObject(json_text, source));
  try {
    return ParseRoot(FieldReader(root, source), source);
  } catch (const json::exception& e) {  // not expected: every access checks types first
    return absl::InternalError(absl::StrCat(source, ": ", e.what()));
  }
}

absl::Status MergeGenerationConfig(std::string_view json_text, ModelConfig& config) {
  constexpr char kSource[] = "generation_config.json";
  TANDEM_ASSIGN_OR_RETURN(json root, ParseObject(json_text, kSource));
  try {
    FieldReader r(root, kSource);
    std::vector<int32_t> eos_ids = config.eos_token_ids;
    TANDEM_RETURN_IF_ERROR(AppendEosIds(r, config.vocab_size, eos_ids));
    TANDEM_ASSIGN_OR_RETURN(std::optional<int32_t> bos, ParseBosId(r, config.vocab_size));
    // Commit only after everything validated, so a failed merge leaves `config` unchanged.
    config.eos_token_ids = std::move(eos_ids);
    if (!config.bos_token_id) config.bos_token_id = bos;
    return absl::OkStatus();
  } catch (const json::exception& e) {
    return absl::InternalError(absl::StrCat(kSource, ": ", e.what()));
  }
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir) {
  std::filesystem::path root(dir);
  std::string config_path = (root / "config.json").string();
  TANDEM_ASSIGN_OR_RETURN(std::string config_text, ReadTextFile(config_path));
  TANDEM_ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(config_text, config_path));
  std::string generation_path = (root / "generation_config.json").string();
  std::error_code error;
  if (!std::filesystem::exists(generation_path, error)) return config;
  TANDEM_ASSIGN_OR_RETURN(std::string generation_text, ReadTextFile(generation_path));
  absl::Status merged = MergeGenerationConfig(generation_text, config);
  if (!merged.ok()) {
    return absl::Status(merged.code(), absl::StrCat(dir, "/", merged.message()));
  }
  return config;
}

}  // namespace tandem
