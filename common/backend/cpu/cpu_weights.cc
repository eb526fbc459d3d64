#include "common/backend/cpu/cpu_weights.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem {

absl::StatusOr<std::span<const float>> CpuWeights::Take(const std::string& name,
                                                        std::vector<int64_t> shape) {
  TANDEM_ASSIGN_OR_RETURN(const TensorView* tensor, store_->Get(name, shape));
  if (tensor->dtype == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": weights must be F32, BF16 or F16, got ", std::string(DTypeName(tensor->dtype))));
  }
  size_t count = static_cast<size_t>(tensor->NumElements());
  compute_bytes_ += count * sizeof(float);
  bool aligned = reinterpret_cast<uintptr_t>(tensor->data.data()) % alignof(float) == 0;
  if (tensor->dtype == DType::kF32 && aligned) {
    return std::span<const float>(reinterpret_cast<const float*>(tensor->data.data()), count);
  }
  std::vector<float>& owned = widened_.emplace_back(count);
  ConvertToFloat(*tensor, owned);
  return std::span<const float>(owned);
}

absl::StatusOr<std::unique_ptr<CpuWeights>> CpuWeights::Load(
    const ModelConfig& c, std::unique_ptr<WeightStore> store) {
  if (c.attention_bias) {
    return absl::UnimplementedError("config.json: attention_bias=true is not supported yet");
  }
  std::unique_ptr<CpuWeights> w(new CpuWeights());
  w->store_ = std::move(store);
  const int64_t hidden = c.hidden_size, q_dim = c.num_heads * c.head_dim,
                kv_dim = c.num_kv_heads * c.head_dim, inter = c.intermediate_size;
  TANDEM_ASSIGN_OR_RETURN(w->embed_tokens_, w->Take("model.embed_tokens.weight",
                                                    {c.vocab_size, hidden}));
  TANDEM_ASSIGN_OR_RETURN(w->final_norm_, w->Take("model.norm.weight", {hidden}));
  if (c.tie_word_embeddings) {
    w->lm_head_ = w->embed_tokens_;
  } else {
    TANDEM_ASSIGN_OR_RETURN(w->lm_head_, w->Take("lm_head.weight", {c.vocab_size, hidden}));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    std::string p = absl::StrCat("model.layers.", i, ".");
    CpuLayerWeights& l = w->layers_.emplace_back();
    TANDEM_ASSIGN_OR_RETURN(l.input_norm, w->Take(p + "input_layernorm.weight", {hidden}));
    TANDEM_ASSIGN_OR_RETURN(l.q_proj, w->Take(p + "self_attn.q_proj.weight", {q_dim, hidden}));
    TANDEM_ASSIGN_OR_RETURN(l.k_proj, w->Take(p + "self_attn.k_proj.weight", {kv_dim, hidden}));
    TANDEM_ASSIGN_OR_RETURN(l.v_proj, w->Take(p + "self_attn.v_proj.weight", {kv_dim, hidden}));
    TANDEM_ASSIGN_OR_RETURN(l.o_proj, w->Take(p + "self_attn.o_proj.weight", {hidden, q_dim}));
    TANDEM_ASSIGN_OR_RETURN(l.post_attention_norm,
                            w->Take(p + "post_attention_layernorm.weight", {hidden}));
    TANDEM_ASSIGN_OR_RETURN(l.gate_proj, w->Take(p + "mlp.gate_proj.weight", {inter, hidden}));
    TANDEM_ASSIGN_OR_RETURN(l.up_proj, w->Take(p + "mlp.up_proj.weight", {inter, hidden}));
    TANDEM_ASSIGN_OR_RETURN(l.down_proj, w->Take(p + "mlp.down_proj.weight", {hidden, inter}));
  }
  return w;
}

}  // namespace tandem
