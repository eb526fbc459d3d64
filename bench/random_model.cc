#include "bench/random_model.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool is_norm;
};

std::vector<TensorSpec> Tensors(const RandomModelShape& s) {
  int64_t q = s.num_heads * s.head_dim, kv = s.num_kv_heads * s.head_dim;
  std::vector<TensorSpec> out = {{"model.embed_tokens.weight", {s.vocab_size, s.hidden_size}, false},
                                 {"model.norm.weight", {s.hidden_size}, true}};
  for (int64_t i = 0; i < s.num_layers; ++i) {
    std::string p = absl::StrCat("model.layers.", i, ".");
    out.push_back({p + "input_layernorm.weight", {s.hidden_size}, true});
    out.push_back({p + "post_attention_layernorm.weight", {s.hidden_size}, true});
    out.push_back({p + "self_attn.q_proj.weight", {q, s.hidden_size}, false});
    out.push_back({p + "self_attn.k_proj.weight", {kv, s.hidden_size}, false});
    out.push_back({p + "self_attn.v_proj.weight", {kv, s.hidden_size}, false});
    out.push_back({p + "self_attn.o_proj.weight", {s.hidden_size, q}, false});
    out.push_back({p + "mlp.gate_proj.weight", {s.intermediate_size, s.hidden_size}, false});
    out.push_back({p + "mlp.up_proj.weight", {s.intermediate_size, s.hidden_size}, false});
    out.push_back({p + "mlp.down_proj.weight", {s.hidden_size, s.intermediate_size}, false});
  }
  return out;
}

int64_t Count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

nlohmann::json Config(const RandomModelShape& s) {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
          {"vocab_size", s.vocab_size}, {"hidden_size", s.hidden_size},
          {"intermediate_size", s.intermediate_size}, {"num_hidden_layers", s.num_layers},
          {"num_attention_heads", s.num_heads}, {"num_key_value_heads", s.num_kv_heads},
          {"head_dim", s.head_dim}, {"max_position_embeddings", s.max_position_embeddings},
          {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0}, {"tie_word_embeddings", true},
          {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "float32"}};
}

}  // namespace

int64_t RandomModelShape::NumParameters() const {
  int64_t total = 0;
  for (const TensorSpec& t : Tensors(*this)) total += Count(t.shape);
  return total;
}

absl::Status WriteRandomModel(const RandomModelShape& shape, const std::string& dir,
                              uint64_t seed) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << Config(shape).dump(2);
  std::vector<TensorSpec> tensors = Tensors(shape);
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  int64_t offset = 0;
  for (const TensorSpec& t : tensors) {
    int64_t bytes = Count(t.shape) * 4;
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned
  std::ofstream out(dir + "/model.safetensors", std::ios::binary);
  uint64_t header_len = text.size();
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> chunk;
  for (const TensorSpec& t : tensors) {
    for (int64_t left = Count(t.shape); left > 0;) {
      chunk.resize(std::min<int64_t>(left, 1 << 20));
      for (float& x : chunk) x = t.is_norm ? 1.0f : dist(rng);
      out.write(reinterpret_cast<const char*>(chunk.data()),
                static_cast<std::streamsize>(chunk.size() * 4));
      left -= static_cast<int64_t>(chunk.size());
    }
  }
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir, "/model.safetensors"));
  return absl::OkStatus();
}

}  // namespace tandem::bench
