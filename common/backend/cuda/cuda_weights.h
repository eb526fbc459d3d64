// The Llama family's weights as bf16 on the device.
//
// Load converts F32/F16 tensors to bf16 (BF16 is copied as stored), uploads each once into
// a single device allocation, and keeps no host copy: the caller drops the WeightStore
// (and its memory maps) afterwards. q/k/v are stacked and gate/up rows interleaved (gate
// j, up j, gate j + 1, ...) so each is one GEMM, and the GEMV can fuse SiLU·mul.
// Immutable after Load; pointers stay valid for the object's lifetime.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/cuda/cuda_handles.h"
#include "common/model/model_config.h"
#include "common/model/safetensors.h"

namespace tandem {

struct CudaLayerWeights {
  const __nv_bfloat16* input_norm = nullptr;           // [hidden]
  const __nv_bfloat16* qkv_proj = nullptr;             // [(H + 2 KV) * head_dim][hidden]
  const __nv_bfloat16* o_proj = nullptr;               // [hidden][H * head_dim]
  const __nv_bfloat16* post_attention_norm = nullptr;  // [hidden]
  const __nv_bfloat16* gate_up_proj = nullptr;         // [inter][2: gate, up][hidden]
  const __nv_bfloat16* down_proj = nullptr;            // [hidden][intermediate]
};

class CudaWeights {
 public:
  static absl::StatusOr<std::unique_ptr<CudaWeights>> Load(const ModelConfig& config,
                                                            const WeightStore& store);

  const __nv_bfloat16* embed_tokens() const { return embed_tokens_; }  // [vocab][hidden]
  const __nv_bfloat16* final_norm() const { return final_norm_; }      // [hidden]
  const __nv_bfloat16* lm_head() const { return lm_head_; }  // [vocab][hidden], maybe tied
  const std::vector<CudaLayerWeights>& layers() const { return layers_; }
  size_t device_bytes() const { return buffer_.size_bytes(); }
  // Bytes one decode step reads: everything but the embedding table (unless tied).
  size_t bytes_read_per_step() const { return bytes_read_per_step_; }

 private:
  CudaWeights() = default;

  DeviceBuffer buffer_;
  const __nv_bfloat16* embed_tokens_ = nullptr;
  const __nv_bfloat16* final_norm_ = nullptr;
  const __nv_bfloat16* lm_head_ = nullptr;
  std::vector<CudaLayerWeights> layers_;
  size_t bytes_read_per_step_ = 0;
};

}  // namespace tandem
