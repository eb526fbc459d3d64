// The model's shape and token conventions, read from a Hugging Face model directory.
//
// Parses config.json of the Llama family (LlamaForCausalLM; MistralForCausalLM and
// Qwen2ForCausalLM are later families) and merges generation_config.json. Unsupported
// architectures are rejected by name. Every field is validated with an error that names it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/dtype.h"

namespace tandem {

// rope_scaling (legacy "rope_scaling" or transformers v5 "rope_parameters").
struct RopeScaling {
  enum class Type { kNone, kLlama3 };
  Type type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;    // num_hidden_layers
  int64_t num_heads = 0;     // num_attention_heads
  int64_t num_kv_heads = 0;  // num_key_value_heads (defaults to num_heads)
  int64_t head_dim = 0;      // head_dim (defaults to hidden_size / num_heads)
  int64_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v/o bias (Qwen2 has q/k/v bias)
  DType torch_dtype = DType::kF32;
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;  // config's eos_token_id, int or list, merged with
                                       // generation_config.json's
};

// Parses config.json text. `source` names the file in error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                             std::string_view source = "config.json");

// Merges generation_config.json text into `config`: eos ids (int or list) are added to the
// set, bos is taken when config.json had none.
absl::Status MergeGenerationConfig(std::string_view json_text, ModelConfig& config);

// Reads `dir`/config.json and, when present, `dir`/generation_config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& dir);

}  // namespace tandem
