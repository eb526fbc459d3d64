#include "common/backend/cuda/cuda_weights.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/bf16_host.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/status.h"

namespace tandem {
namespace {

constexpr int64_t kAlignElements = 128;  // 256-byte aligned tensors

struct Piece {
  std::string name;
  std::vector<int64_t> shape;
};

// One device tensor written to *target: pieces stacked along rows (q|k|v), or with
// interleave_rows their rows alternating (gate 0, up 0, gate 1, ...: the GEMV's fused
// SiLU·mul epilogue needs each pair in one block; pieces of one shape).
struct Upload {
  std::vector<Piece> pieces;
  const __nv_bfloat16** target = nullptr;
  bool interleave_rows = false;
  int64_t offset = 0;  // elements into the buffer
  int64_t num_elements = 0;
};

absl::StatusOr<const TensorView*> GetFloatTensor(const WeightStore& store, const Piece& piece) {
  TANDEM_ASSIGN_OR_RETURN(const TensorView* tensor, store.Get(piece.name, piece.shape));
  if (tensor->dtype == DType::kI32) {
    return absl::InvalidArgumentError(absl::StrCat(piece.name,
                                                   ": weights must be F32, BF16 or F16, got I32"));
  }
  return tensor;
}

// Copies one tensor to `dst` as bf16 (converting through host staging unless already bf16),
// its rows (the last dimension) `row_pitch` elements apart.
absl::Status UploadTensor(const TensorView& tensor, __nv_bfloat16* dst, int64_t row_pitch,
                          std::vector<float>& widened, std::vector<uint16_t>& staging) {
  const size_t count = static_cast<size_t>(tensor.NumElements());
  const size_t row_bytes = static_cast<size_t>(tensor.shape.back()) * 2;
  const void* src = tensor.data.data();
  if (tensor.dtype != DType::kBF16) {
    widened.resize(count);
    staging.resize(count);
    ConvertToFloat(tensor, widened);
    FloatsToBf16(widened, staging);
    src = staging.data();
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy2D(dst, static_cast<size_t>(row_pitch) * 2, src,
                                           row_bytes, row_bytes, count * 2 / row_bytes,
                                           cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaWeights>> CudaWeights::Load(const ModelConfig& c,
                                                              const WeightStore& store) {
  if (c.attention_bias) {
    return absl::UnimplementedError("config.json: attention_bias=true is not supported yet");
  }
  std::unique_ptr<CudaWeights> w(new CudaWeights());
  const int64_t hidden = c.hidden_size, q_dim = c.num_heads * c.head_dim,
                kv_dim = c.num_kv_heads * c.head_dim, inter = c.intermediate_size;
  std::vector<Upload> uploads;
  uploads.push_back({{{"model.embed_tokens.weight", {c.vocab_size, hidden}}}, &w->embed_tokens_});
  uploads.push_back({{{"model.norm.weight", {hidden}}}, &w->final_norm_});
  if (!c.tie_word_embeddings) {
    uploads.push_back({{{"lm_head.weight", {c.vocab_size, hidden}}}, &w->lm_head_});
  }
  w->layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    CudaLayerWeights& l = w->layers_[i];
    uploads.push_back({{{p + "input_layernorm.weight", {hidden}}}, &l.input_norm});
    uploads.push_back({{{p + "self_attn.q_proj.weight", {q_dim, hidden}},
                        {p + "self_attn.k_proj.weight", {kv_dim, hidden}},
                        {p + "self_attn.v_proj.weight", {kv_dim, hidden}}},
                       &l.qkv_proj});
    uploads.push_back({{{p + "self_attn.o_proj.weight", {hidden, q_dim}}}, &l.o_proj});
    uploads.push_back({{{p + "post_attention_layernorm.weight", {hidden}}}, &l.post_attention_norm});
    uploads.push_back({{{p + "mlp.gate_proj.weight", {inter, hidden}},
                        {p + "mlp.up_proj.weight", {inter, hidden}}},
                       &l.gate_up_proj, /*interleave_rows=*/true});
    uploads.push_back({{{p + "mlp.down_proj.weight", {hidden, inter}}}, &l.down_proj});
  }

  // Check every tensor before allocating, then place them.
  int64_t total = 0;
  for (Upload& u : uploads) {
    for (const Piece& piece : u.pieces) {
      TANDEM_ASSIGN_OR_RETURN(const TensorView* tensor, GetFloatTensor(store, piece));
      u.num_elements += tensor->NumElements();
    }
    u.offset = total;
    total += (u.num_elements + kAlignElements - 1) / kAlignElements * kAlignElements;
  }
  TANDEM_ASSIGN_OR_RETURN(w->buffer_, DeviceBuffer::Allocate(static_cast<size_t>(total) * 2));
  std::vector<float> widened;
  std::vector<uint16_t> staging;
  auto* base = w->buffer_.as<__nv_bfloat16>();
  for (Upload& u : uploads) {
    __nv_bfloat16* dst = base + u.offset;
    *u.target = dst;
    for (const Piece& piece : u.pieces) {
      TANDEM_ASSIGN_OR_RETURN(const TensorView* tensor, GetFloatTensor(store, piece));
      const int64_t cols = tensor->shape.back();
      if (u.interleave_rows) {
        const auto num_pieces = static_cast<int64_t>(u.pieces.size());
        TANDEM_RETURN_IF_ERROR(UploadTensor(*tensor, dst, num_pieces * cols, widened, staging));
        dst += cols;  // the next piece's rows start one row later
      } else {
        TANDEM_RETURN_IF_ERROR(UploadTensor(*tensor, dst, cols, widened, staging));
        dst += tensor->NumElements();
      }
    }
    if (u.target != &w->embed_tokens_ || c.tie_word_embeddings) {
      w->bytes_read_per_step_ += static_cast<size_t>(u.num_elements) * 2;
    }
  }
  if (c.tie_word_embeddings) w->lm_head_ = w->embed_tokens_;
  return w;
}

}  // namespace tandem
