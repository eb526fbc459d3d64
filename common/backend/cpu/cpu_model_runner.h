// The CPU backend: Llama-family forward in fp32 over a paged KV cache.
//
// GEMMs run through OpenBLAS (multi-threaded); attention runs the reference kernel in
// parallel over (token, head). It is the correctness reference and the CI path: it must be
// exact, not fastest. Owned and called by one engine thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/cpu/cpu_weights.h"
#include "common/backend/cpu/thread_pool.h"
#include "common/backend/model_runner.h"
#include "common/backend/reference/paged_attention.h"

namespace tandem {

struct CpuRunnerOptions {
  int64_t num_kv_blocks = 256;     // KV pool size, in blocks
  int64_t block_size_tokens = 16;  // tokens per KV block
  int num_threads = 0;             // 0: all hardware threads
};

class CpuModelRunner final : public ModelRunner {
 public:
  // Loads `model_dir` (config.json, generation_config.json, safetensors).
  static absl::StatusOr<std::unique_ptr<CpuModelRunner>> Load(const std::string& model_dir,
                                                              const CpuRunnerOptions& options);
  static absl::StatusOr<std::unique_ptr<CpuModelRunner>> Create(
      const ModelConfig& config, std::unique_ptr<WeightStore> store,
      const CpuRunnerOptions& options);

  absl::StatusOr<LogitsView> Forward(const ForwardInputs& inputs) override;
  absl::Status CopyBlocks(std::span<const BlockCopy> copies) override;
  const ModelConfig& config() const override { return config_; }
  const KvLayout& kv_layout() const override { return layout_; }
  int64_t num_kv_blocks() const override { return num_kv_blocks_; }

  // One layer's cache (for KV transfer and tests).
  reference::LayerKv layer_kv(int64_t layer);
  size_t weight_bytes() const { return weights_->compute_bytes(); }
  size_t kv_pool_bytes() const { return kv_.size() * sizeof(float); }

 private:
  CpuModelRunner(const ModelConfig& config, std::unique_ptr<CpuWeights> weights,
                 const CpuRunnerOptions& options);

  void ResizeScratch(int64_t num_tokens);
  void AttentionBlock(int64_t layer, const ForwardInputs& in);
  void MlpBlock(int64_t layer, int64_t num_tokens);
  void Attention(int64_t layer, const ForwardInputs& in);
  void ComputeLogits(const ForwardInputs& in);

  ModelConfig config_;
  KvLayout layout_;
  int64_t num_kv_blocks_;
  std::unique_ptr<CpuWeights> weights_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
  std::vector<float> kv_;        // [layers][K|V][num_slots][num_kv_heads][head_dim]
  ThreadPool pool_;
  // Scratch, resized per batch: [num_tokens][...].
  std::vector<float> residual_, hidden_, q_, k_, v_, attn_, proj_, gate_up_, act_;
  std::vector<float> last_hidden_, logits_;  // [num_logits_rows][hidden | vocab]
  std::vector<int32_t> token_ids_;           // the pass's ids, fed tokens resolved
};

}  // namespace tandem
