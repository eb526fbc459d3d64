// The Llama family's weights as fp32 arrays for the CPU backend.
//
// F32 tensors are used in place from the memory-mapped files (never copied); BF16/F16 are
// widened once into owned buffers. Every tensor's shape is checked against the config.
// Immutable after Load.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/model_config.h"
#include "common/model/safetensors.h"

namespace tandem {

struct CpuLayerWeights {
  std::span<const float> input_norm;         // [hidden]
  std::span<const float> q_proj;             // [num_heads * head_dim][hidden]
  std::span<const float> k_proj;             // [num_kv_heads * head_dim][hidden]
  std::span<const float> v_proj;             // [num_kv_heads * head_dim][hidden]
  std::span<const float> o_proj;             // [hidden][num_heads * head_dim]
  std::span<const float> post_attention_norm;  // [hidden]
  std::span<const float> gate_proj;          // [intermediate][hidden]
  std::span<const float> up_proj;            // [intermediate][hidden]
  std::span<const float> down_proj;          // [hidden][intermediate]
};

class CpuWeights {
 public:
  static absl::StatusOr<std::unique_ptr<CpuWeights>> Load(const ModelConfig& config,
                                                           std::unique_ptr<WeightStore> store);

  std::span<const float> embed_tokens() const { return embed_tokens_; }  // [vocab][hidden]
  std::span<const float> final_norm() const { return final_norm_; }      // [hidden]
  std::span<const float> lm_head() const { return lm_head_; }  // [vocab][hidden], maybe tied
  const std::vector<CpuLayerWeights>& layers() const { return layers_; }
  // Bytes of fp32 weights the forward reads (tied embeddings counted once).
  size_t compute_bytes() const { return compute_bytes_; }

 private:
  CpuWeights() = default;
  absl::StatusOr<std::span<const float>> Take(const std::string& name,
                                              std::vector<int64_t> shape);

  std::unique_ptr<WeightStore> store_;
  std::vector<std::vector<float>> widened_;
  std::span<const float> embed_tokens_, final_norm_, lm_head_;
  std::vector<CpuLayerWeights> layers_;
  size_t compute_bytes_ = 0;
};

}  // namespace tandem
