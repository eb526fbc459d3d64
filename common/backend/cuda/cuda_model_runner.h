// The CUDA backend: Llama-family forward with bf16 weights and a bf16 paged KV cache, fp32
// accumulation (GEMMs through cuBLASLt, own kernels for the rest) and an fp32 residual
// stream. Logits are fp32; they come back to the host only when the caller asks
// (ForwardInputs::logits_on_host) or for rows the device cannot sample (beam search).
//
// Memory: weights are uploaded once (no host copy kept); activations are sized for
// max_num_tokens rows; the KV pool takes what is left of gpu_memory_fraction of the
// device's memory (or exactly num_kv_blocks when set) and is reported at start.
// Decode steps (one token per sequence) run as CUDA graphs, one per (sequences, block-table
// length) bucket, both rounded up to powers of two and padded: a bucket's first step runs
// eagerly (warming cuBLASLt plans and kernel attributes), its second is captured, later ones
// replay it after one metadata upload. GEMMs with at most gemv_max_rows rows use the
// hand-written GEMV, the rest cuBLASLt.
// Owned and called by one engine thread; every call runs on the runner's own stream.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/cuda/cublaslt_gemm.h"
#include "common/backend/cuda/cuda_handles.h"
#include "common/backend/cuda/cuda_sampler.h"
#include "common/backend/cuda/cuda_weights.h"
#include "common/backend/cuda/kernels/paged_kv.h"
#include "common/backend/model_runner.h"
#include "common/kv_cache/kv_cache_view.h"

namespace tandem {

struct CudaRunnerOptions {
  int device = 0;                     // CUDA device ordinal
  int64_t block_size_tokens = 16;     // tokens per KV block
  double gpu_memory_fraction = 0.9;   // share of the device's memory this runner may fill
  int64_t num_kv_blocks = 0;          // > 0: exactly this many blocks (tests); 0: from the fraction
  int64_t max_num_tokens = 8192;      // token rows per Forward
  int64_t max_num_seqs = 256;         // sequences per Forward
  int64_t max_logits_rows = 256;      // logits rows per Forward
  bool use_cuda_graphs = true;        // decode steps as CUDA graphs per batch bucket
  // GEMMs with m <= this use the GEMV kernel (0: never). 1: on the H200 the GEMV beats
  // cuBLASLt on every 8B decode shape at m = 1 and loses at m >= 2 but for the LM head
  // (cuda_model_bench's gemm_decode_shapes; docs/cuda_backend.md).
  int64_t gemv_max_rows = 1;
  // Other GEMMs with m <= this use the skinny tensor-core kernel (at most
  // kSkinnyGemmMaxRows). 0, the default: on the H200 its wgmma loop still loses to cuBLASLt
  // on the 8B decode shapes but the LM head (a batch-64 step 0.19 ms slower;
  // docs/cuda_backend.md, sessions 8 and 9); the benchmark and tests run it.
  int64_t skinny_gemm_max_rows = 0;
  // cuBLASLt candidates timed for each row count in [32, 64] (1: the heuristic's first).
  int gemm_candidates = 8;
  // Sample on the device (CudaSampler) when the caller leaves the logits with the runner
  // (ForwardInputs::logits_on_host false, as the engine does): SampleLogits reads the
  // device logits and only tokens and logprobs come back. Off: those logits are copied to
  // the host and sampled by the CPU chain (ModelRunner's defaults), e.g. to compare.
  bool gpu_sampling = true;
  // The KV pool in managed memory, so host code (the TCP KV transport, which reads and
  // writes KvCacheView byte ranges) can reach it through host_kv_view(). Off: plain device
  // memory, no host view (the NCCL transport of issue 7 is the GPU-native path).
  bool host_visible_kv = false;
  // Whether the engine pipelines its decode steps on this runner by default
  // (ModelRunner::OverlapsSteps; EngineOptions::pipeline_steps overrides): the next pass is
  // queued with its tokens fed on the device from the pending GPU sampling (docs/engine.md,
  // "Pipelined decode steps"; on the H200 the same tokens, 0.01–0.06 ms faster per step).
  bool overlap_steps = true;
};

// What the runner holds on the device, reported at start.
struct CudaMemoryReport {
  int64_t num_kv_blocks = 0;
  int64_t num_kv_tokens = 0;
  size_t kv_pool_bytes = 0;
  size_t weight_bytes = 0;
  size_t activation_bytes = 0;
  size_t device_total_bytes = 0;
  std::string ToString() const;
};

// Where the logits went since the runner was created (tests and benchmarks read it).
struct CudaLogitsCounts {
  int64_t device_sampled_rows = 0;  // rows SampleLogits sampled through the CudaSampler
  int64_t gathered_rows = 0;        // of those, from scratch copies (fan-out, gaps)
  int64_t fallback_rows = 0;        // of those, by the CudaSampler's per-row CPU fallback
  int64_t host_rows = 0;            // rows copied to the host by Forward or CopyLogitsRows
};

class CudaModelRunner final : public ModelRunner {
 public:
  // Loads `model_dir` (config.json, generation_config.json, safetensors) onto the device.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Load(const std::string& model_dir,
                                                               const CudaRunnerOptions& options);
  // Uploads the weights of `store`, which the caller may drop afterwards.
  static absl::StatusOr<std::unique_ptr<CudaModelRunner>> Create(
      const ModelConfig& config, const WeightStore& store, const CudaRunnerOptions& options);
  ~CudaModelRunner() override;

  // Returns when the pass is done, except when its logits stay on the device for the GPU
  // sampler (logits rows requested, logits_on_host false, gpu_sampling, no kv_progress, no
  // host_visible_kv): then it returns once the pass is queued, so the host prepares the
  // sampling while the GPU runs, and SampleLogits / CopyLogitsRows (same stream) wait for it.
  absl::StatusOr<LogitsView> Forward(const ForwardInputs& inputs) override;
  // With gpu_sampling: samples on the device from the last Forward's logits (rows that are
  // named once and consecutively in place, others from copies in a scratch buffer); the
  // CudaSampler's own per-row CPU fallback covers what its kernels cannot do. Synchronizes
  // (also when it fails).
  absl::StatusOr<std::vector<SampledToken>> SampleLogits(
      const LogitsView& logits, std::span<const int32_t> logits_rows, const SamplingContext& ctx,
      std::span<const SamplingRow> rows) override;
  // With gpu_sampling, the sampling is queued on the device and fed ids of the next Forward
  // are resolved there from the sampler's results (a call the device path splits into
  // several launches samples at the start, and the next Forward resolves on the host).
  absl::Status StartSampleLogits(const LogitsView& logits, std::span<const int32_t> logits_rows,
                                 const SamplingContext& ctx,
                                 std::span<const SamplingRow> rows) override;
  absl::StatusOr<std::vector<SampledToken>> FinishSampleLogits() override;
  bool OverlapsSteps() const override { return options_.overlap_steps && sampler_ != nullptr; }
  // Copies the named rows from the device when the view holds no host values.
  absl::Status CopyLogitsRows(const LogitsView& logits, std::span<const int32_t> logits_rows,
                              std::span<float> out) override;
  // Copies every layer's K and V of each src block into its dst block (one kernel).
  absl::Status CopyBlocks(std::span<const BlockCopy> copies) override;
  const ModelConfig& config() const override { return config_; }
  const KvLayout& kv_layout() const override { return layout_; }
  int64_t num_kv_blocks() const override { return memory_.num_kv_blocks; }

  const CudaMemoryReport& memory_report() const { return memory_; }
  const CudaLogitsCounts& logits_counts() const { return logits_counts_; }
  // Weight bytes one decode step reads (everything but an untied embedding table).
  size_t weight_bytes_read_per_step() const { return weights_->bytes_read_per_step(); }
  cudaStream_t stream() const { return stream_.get(); }
  // Benchmarks switch these to attribute time; captured graphs are dropped.
  void set_use_cuda_graphs(bool use) { options_.use_cuda_graphs = use; graphs_.clear(); }
  void set_gemv_max_rows(int64_t rows) { options_.gemv_max_rows = rows; graphs_.clear(); }
  void set_skinny_gemm_max_rows(int64_t rows) {
    options_.skinny_gemm_max_rows = rows;
    graphs_.clear();
  }
  // Benchmark attribution only: leaves the named kernels out of every pass (the outputs
  // are wrong), so a step's time with and without them shows what they cost in place.
  // Decode steps fuse RoPE + KV write into the attention (kSkipAttention drops both) and, on
  // the GEMV path, SiLU·mul into the gate_up GEMV (kSkipSiluMul has nothing to drop there).
  enum SkipKernels : uint32_t {
    kSkipNone = 0, kSkipNorms = 1, kSkipSiluMul = 4, kSkipAttention = 8
  };
  void set_skip_kernels(uint32_t skip) { skip_kernels_ = skip; graphs_.clear(); }
  int64_t num_cuda_graphs() const;
  // One layer's cache, [num_slots][num_kv_heads][head_dim] bf16 for K and V.
  PagedKvCache layer_kv(int64_t layer) const;
  // The KV pool as host-addressable bytes (host_visible_kv only, else FAILED_PRECONDITION).
  // Host writes must happen between Forward calls for the blocks they touch, as on the CPU
  // backend; Forward synchronizes before it returns, so its KV writes are visible after.
  absl::StatusOr<KvCacheView> host_kv_view() const;
  // The KV pool as device memory (KvMemory::kCudaDevice on options.device), for GPU
  // transports (NCCL). Valid whether or not the pool is managed memory.
  KvCacheView device_kv_view() const;

 private:
  struct Batch;  // the device-side view of one ForwardInputs

  CudaModelRunner(const ModelConfig& config, const CudaRunnerOptions& options);
  absl::Status Allocate(const WeightStore& store);
  absl::Status CheckLimits(const ForwardInputs& in) const;
  absl::StatusOr<Batch> UploadBatch(const ForwardInputs& in);
  // A decode-only batch padded to `seqs` sequences and `blocks` block-table entries, laid
  // out at offsets that depend only on (seqs, blocks), so a captured graph can replay it.
  // Copies the first `ints` of metadata_host_ to metadata_ and records metadata_copied_.
  absl::Status CopyMetadata(size_t ints);
  absl::StatusOr<Batch> UploadPaddedDecodeBatch(const ForwardInputs& in, int32_t seqs,
                                                int32_t blocks);
  // Everything from the embedding to the logits on the device; no host synchronization.
  absl::Status RunModel(const Batch& batch);
  absl::Status RunDecodeGraph(const ForwardInputs& in, Batch& batch);
  // Input norm, qkv, RoPE + KV write and (attend, or a decode step's fused RoPE) the
  // attention into attn_; the caller runs the o projection.
  absl::Status AttentionBlock(int64_t layer, const Batch& batch, bool attend);
  absl::StatusOr<Batch> CompactLogitsRows(const Batch& batch);
  // fused_rope (decode only): the attention kernel also does the step's RoPE + KV write.
  absl::Status Attention(int64_t layer, const Batch& batch, bool fused_rope);
  absl::Status MlpBlock(int64_t layer, const Batch& batch);
  absl::Status ComputeLogits(const Batch& batch);
  absl::Status Norm(const __nv_bfloat16* weight, int64_t rows);
  absl::Status CheckLogitsRows(const LogitsView& logits,
                               std::span<const int32_t> logits_rows) const;
  // Copies logits rows `sources` into the first rows of sample_scratch_ (one copy per run of
  // consecutive sources).
  absl::StatusOr<DeviceLogits> GatherLogitsRows(std::span<const int32_t> sources);
  absl::StatusOr<std::vector<SampledToken>> SampleOnDevice(std::span<const int32_t> logits_rows,
                                                           const SamplingContext& ctx,
                                                           std::span<const SamplingRow> rows);
  // The sampler's rows of one launch: the logits rows where they are when named once and
  // consecutively, else gathered into sample_scratch_.
  absl::StatusOr<DeviceLogits> SamplerRows(std::span<const int32_t> logits_rows,
                                           bool consecutive);
  // After a batch's metadata upload: its fed ids become the pending device sampling's tokens.
  absl::Status FeedSampledTokens(const Batch& batch);
  // The GEMV where it takes the shape and m <= gemv_max_rows, else the skinny GEMM where it
  // takes it and m <= skinny_gemm_max_rows, else cuBLASLt. UsesOwnKernel: one of the first
  // two (they fuse SiLU·mul; cuBLASLt does not).
  bool UsesGemv(const GemmArgs& args) const;
  bool UsesSkinnyGemm(const GemmArgs& args) const;
  bool UsesOwnKernel(const GemmArgs& args) const { return UsesGemv(args) || UsesSkinnyGemm(args); }
  absl::Status MatMul(const GemmArgs& args);
  absl::Status Gemm(const __nv_bfloat16* a, int64_t m, int64_t k, const __nv_bfloat16* w,
                    int64_t n, void* out, GemmOutput output);
  absl::Status GemmIntoResidual(const __nv_bfloat16* a, int64_t m, int64_t k,
                                const __nv_bfloat16* w);

  ModelConfig config_;
  CudaRunnerOptions options_;
  KvLayout layout_;
  CudaMemoryReport memory_;
  int64_t max_blocks_per_seq_ = 0;
  CudaStream stream_;
  std::unique_ptr<CublasLtGemm> gemm_;
  std::unique_ptr<CudaWeights> weights_;
  DeviceBuffer inv_freq_;  // [head_dim / 2] fp32
  DeviceBuffer kv_;        // [layers][K|V][num_slots][num_kv_heads][head_dim] bf16
  // Activations, [max_num_tokens][...]: residual fp32, the rest bf16.
  DeviceBuffer residual_, hidden_, qkv_, q_, attn_, gate_up_, act_;
  DeviceBuffer last_hidden_, logits_;  // [max_logits_rows][hidden] bf16, [.][vocab] fp32
  DeviceBuffer metadata_;              // int32 batch description, see UploadBatch
  PinnedBuffer metadata_host_, logits_host_;
  std::unique_ptr<CudaSampler> sampler_;  // gpu_sampling only
  DeviceBuffer sample_scratch_;           // [scratch_rows_][vocab] fp32, gathered rows
  int64_t scratch_rows_ = 0;
  static constexpr int64_t kMaxSamplerRows = 65535;  // CudaSamplerOptions::max_num_rows's bound
  CudaLogitsCounts logits_counts_;
  // The sampling StartSampleLogits left pending (gpu_sampling): its row count (-1: none),
  // and its tokens when they are already on the host (a call split over several launches).
  int64_t pending_rows_ = -1;
  std::optional<std::vector<SampledToken>> pending_host_tokens_;
  bool feed_on_device_ = false;     // the Forward being run resolves fed ids on the device
  std::vector<int32_t> fed_ids_;    // its ids with fed entries resolved on the host
  size_t metadata_ints_ = 0;
  struct GraphEntry {
    bool warmed = false;  // ran eagerly once
    CudaGraphExec exec;
  };
  uint32_t skip_kernels_ = kSkipNone;
  // (seqs, blocks, logits rows are the first rows in order) bucket
  std::map<std::tuple<int32_t, int32_t, bool>, GraphEntry> graphs_;
  // Recorded after each layer's K/V write when a forward pass publishes its progress
  // (ForwardInputs::kv_progress, eager steps only); re-recorded by later passes.
  std::vector<CudaEvent> layer_written_;
  // Recorded after each copy out of metadata_host_: the host waits on it before writing
  // there again (Forward may return before its pass, and so its copy, has run).
  CudaEvent metadata_copied_;
};

}  // namespace tandem
