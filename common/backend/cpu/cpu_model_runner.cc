#include "common/backend/cpu/cpu_model_runner.h"

#include <cblas.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/reference/activation.h"
#include "common/backend/reference/rms_norm.h"
#include "common/backend/reference/rope.h"
#include "common/logging.h"
#include "common/status.h"

namespace tandem {
namespace {

// out[m][n] = sum_k a[m][k] * w[n][k]  (w is a Hugging Face Linear weight [out][in]).
// ldc lets callers write into a column range of a wider output.
void MatMulTransposed(std::span<const float> a, int64_t m, int64_t k, std::span<const float> w,
                      int64_t n, float* out, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0f, a.data(), static_cast<int>(k), w.data(),
              static_cast<int>(k), 0.0f, out, static_cast<int>(ldc));
}

void AddInPlace(std::span<float> acc, std::span<const float> x) {
  for (size_t i = 0; i < acc.size(); ++i) acc[i] += x[i];
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuModelRunner>> CpuModelRunner::Load(
    const std::string& model_dir, const CpuRunnerOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::Open(model_dir));
  return Create(config, std::move(store), options);
}

absl::StatusOr<std::unique_ptr<CpuModelRunner>> CpuModelRunner::Create(
    const ModelConfig& config, std::unique_ptr<WeightStore> store,
    const CpuRunnerOptions& options) {
  if (options.num_kv_blocks <= 0) {
    return absl::InvalidArgumentError("num_kv_blocks must be > 0");
  }
  if (options.num_threads < 0) {
    return absl::InvalidArgumentError("num_threads must be >= 0 (0: all hardware threads)");
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CpuWeights> weights,
                          CpuWeights::Load(config, std::move(store)));
  std::unique_ptr<CpuModelRunner> runner(
      new CpuModelRunner(config, std::move(weights), options));
  TANDEM_RETURN_IF_ERROR(runner->layout_.Validate());
  runner->kv_.assign(2 * config.num_layers * options.num_kv_blocks * options.block_size_tokens *
                         runner->layout_.ElementsPerTokenPerLayer(),
                     0.0f);
  return runner;
}

CpuModelRunner::CpuModelRunner(const ModelConfig& config, std::unique_ptr<CpuWeights> weights,
                               const CpuRunnerOptions& options)
    : config_(config),
      num_kv_blocks_(options.num_kv_blocks),
      weights_(std::move(weights)),
      inv_freq_(reference::RopeInverseFrequencies(config)),
      pool_(options.num_threads) {
  layout_ = KvLayout{.dtype = DType::kF32,
                     .block_size_tokens = options.block_size_tokens,
                     .num_layers = config.num_layers,
                     .total_kv_heads = config.num_kv_heads,
                     .kv_head_begin = 0,
                     .num_kv_heads = config.num_kv_heads,
                     .head_dim = config.head_dim};
  openblas_set_num_threads(pool_.num_threads());
}

reference::LayerKv CpuModelRunner::layer_kv(int64_t layer) {
  int64_t num_slots = num_kv_blocks_ * layout_.block_size_tokens;
  int64_t region = num_slots * layout_.ElementsPerTokenPerLayer();
  float* base = kv_.data() + 2 * layer * region;
  return {.k = base, .v = base + region, .num_slots = num_slots,
          .num_kv_heads = layout_.num_kv_heads, .head_dim = layout_.head_dim};
}

absl::Status CpuModelRunner::CopyBlocks(std::span<const BlockCopy> copies) {
  const int64_t block_elems = layout_.block_size_tokens * layout_.ElementsPerTokenPerLayer();
  for (const BlockCopy& copy : copies) {
    if (copy.src < 0 || copy.src >= num_kv_blocks_ || copy.dst < 0 || copy.dst >= num_kv_blocks_) {
      return absl::InvalidArgumentError(absl::StrCat("block copy ", copy.src, " -> ", copy.dst,
                                                     " outside [0, ", num_kv_blocks_, ")"));
    }
    for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
      reference::LayerKv kv = layer_kv(layer);
      std::copy_n(kv.k + copy.src * block_elems, block_elems, kv.k + copy.dst * block_elems);
      std::copy_n(kv.v + copy.src * block_elems, block_elems, kv.v + copy.dst * block_elems);
    }
  }
  return absl::OkStatus();
}

void CpuModelRunner::ResizeScratch(int64_t num_tokens) {
  const ModelConfig& c = config_;
  residual_.resize(num_tokens * c.hidden_size);
  hidden_.resize(num_tokens * c.hidden_size);
  proj_.resize(num_tokens * c.hidden_size);
  q_.resize(num_tokens * c.num_heads * c.head_dim);
  attn_.resize(num_tokens * c.num_heads * c.head_dim);
  k_.resize(num_tokens * c.num_kv_heads * c.head_dim);
  v_.resize(num_tokens * c.num_kv_heads * c.head_dim);
  gate_up_.resize(num_tokens * 2 * c.intermediate_size);
  act_.resize(num_tokens * c.intermediate_size);
}

absl::StatusOr<LogitsView> CpuModelRunner::Forward(const ForwardInputs& inputs) {
  TANDEM_RETURN_IF_ERROR(ValidateForwardInputs(inputs, num_kv_blocks_, layout_.block_size_tokens,
                                               config_.max_position_embeddings,
                                               config_.vocab_size, num_pending_sampled_rows()));
  ForwardInputs in = inputs;  // with the pending sampling's tokens in place of FedTokenId
  TANDEM_RETURN_IF_ERROR(ResolveFedTokens(inputs.token_ids, token_ids_));
  in.token_ids = token_ids_;
  const int64_t num_tokens = static_cast<int64_t>(in.token_ids.size());
  ResizeScratch(num_tokens);
  reference::EmbeddingGather(weights_->embed_tokens(), config_.hidden_size, in.token_ids,
                             residual_);
  for (int64_t layer = 0; layer < config_.num_layers; ++layer) {
    AttentionBlock(layer, in);
    MlpBlock(layer, num_tokens);
  }
  ComputeLogits(in);
  return LogitsView{.values = logits_,
                    .num_rows = static_cast<int64_t>(in.logits_rows.size()),
                    .vocab_size = config_.vocab_size};
}

void CpuModelRunner::AttentionBlock(int64_t layer, const ForwardInputs& in) {
  const ModelConfig& c = config_;
  const CpuLayerWeights& w = weights_->layers()[layer];
  const int64_t num_tokens = static_cast<int64_t>(in.token_ids.size());
  reference::RmsNorm(residual_, w.input_norm, c.rms_norm_eps, c.hidden_size, hidden_);
  MatMulTransposed(hidden_, num_tokens, c.hidden_size, w.q_proj, c.num_heads * c.head_dim,
                   q_.data(), c.num_heads * c.head_dim);
  MatMulTransposed(hidden_, num_tokens, c.hidden_size, w.k_proj, c.num_kv_heads * c.head_dim,
                   k_.data(), c.num_kv_heads * c.head_dim);
  MatMulTransposed(hidden_, num_tokens, c.hidden_size, w.v_proj, c.num_kv_heads * c.head_dim,
                   v_.data(), c.num_kv_heads * c.head_dim);
  reference::ApplyRope(q_, c.num_heads, c.head_dim, in.positions, inv_freq_);
  reference::ApplyRope(k_, c.num_kv_heads, c.head_dim, in.positions, inv_freq_);
  reference::WriteKv(k_, v_, in.slot_mapping, layer_kv(layer));
  if (in.kv_progress != nullptr) in.kv_progress->LayerWritten(layer, nullptr);  // host: done
  Attention(layer, in);
  MatMulTransposed(attn_, num_tokens, c.num_heads * c.head_dim, w.o_proj, c.hidden_size,
                   proj_.data(), c.hidden_size);
  AddInPlace(residual_, proj_);
}

void CpuModelRunner::Attention(int64_t layer, const ForwardInputs& in) {
  const int64_t heads = config_.num_heads, dim = config_.head_dim;
  const int64_t group = heads / config_.num_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  const reference::LayerKv cache = layer_kv(layer);
  // token row -> sequence index, so work items can be split evenly over (token, head)
  std::vector<int32_t> seq_of(in.token_ids.size());
  for (size_t s = 0; s + 1 < in.query_start.size(); ++s) {
    for (int32_t t = in.query_start[s]; t < in.query_start[s + 1]; ++t) seq_of[t] = s;
  }
  const int64_t num_items = static_cast<int64_t>(in.token_ids.size()) * heads;
  pool_.ParallelFor(num_items, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      int64_t t = item / heads, h = item % heads;
      scores.resize(static_cast<size_t>(in.positions[t]) + 1);
      std::span<const float> q(q_.data() + item * dim, dim);
      std::span<float> out(attn_.data() + item * dim, dim);
      reference::AttendOneHead(q, h / group, in.positions[t], in.block_tables[seq_of[t]],
                               layout_.block_size_tokens, cache, scale, scores, out);
    }
  });
}

void CpuModelRunner::MlpBlock(int64_t layer, int64_t num_tokens) {
  const ModelConfig& c = config_;
  const CpuLayerWeights& w = weights_->layers()[layer];
  const int64_t inter = c.intermediate_size;
  reference::RmsNorm(residual_, w.post_attention_norm, c.rms_norm_eps, c.hidden_size, hidden_);
  MatMulTransposed(hidden_, num_tokens, c.hidden_size, w.gate_proj, inter, gate_up_.data(),
                   2 * inter);
  MatMulTransposed(hidden_, num_tokens, c.hidden_size, w.up_proj, inter, gate_up_.data() + inter,
                   2 * inter);
  reference::SiluMul(gate_up_, inter, act_);
  MatMulTransposed(act_, num_tokens, inter, w.down_proj, c.hidden_size, proj_.data(),
                   c.hidden_size);
  AddInPlace(residual_, proj_);
}

void CpuModelRunner::ComputeLogits(const ForwardInputs& in) {
  const int64_t hidden = config_.hidden_size;
  const int64_t rows = static_cast<int64_t>(in.logits_rows.size());
  last_hidden_.resize(rows * hidden);
  logits_.resize(rows * config_.vocab_size);
  if (rows == 0) return;
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(residual_.data() + in.logits_rows[r] * hidden, hidden,
                last_hidden_.data() + r * hidden);
  }
  reference::RmsNorm(last_hidden_, weights_->final_norm(), config_.rms_norm_eps, hidden,
                     last_hidden_);
  MatMulTransposed(last_hidden_, rows, hidden, weights_->lm_head(), config_.vocab_size,
                   logits_.data(), config_.vocab_size);
}

}  // namespace tandem
