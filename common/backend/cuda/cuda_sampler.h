// The GPU sampler: SampleBatch (common/sampling/sampler.h) on logits that stay on the device.
//
// Same inputs and outputs as SampleBatch, except that the logits are a device pointer: the
// fp32 [num_rows][row_stride] rows the CUDA runner's LM head writes. The result is the same
// token as the CPU chain on the same logits (greedy always; seeded draws except when the
// cumulative probability lands within double rounding of a boundary) and logprobs within
// float rounding. Two launches per batch (kernels/sampling.h): the processors as sparse
// per-token edits built on the host from each row's params and history, then one fused
// block per row (temperature, logprobs, top-k/top-p by radix select, min-p, greedy or the
// seeded draw). Only the results (a few hundred bytes per row) come back to the host.
//
// CPU fallback, per row (the row's original logits are copied to the host first and run
// through SampleBatch): rows with a repeated logit_bias token id among the tokens they may
// generate (the CPU adds the biases one after another in float; rare, and the edits hold
// one bias per token). Beam-search rows are INVALID_ARGUMENT, as SampleBatch refuses them.
//
// Not thread-safe: one caller (the engine thread) at a time. The logits are processed in
// place (edited entries and, for allowed_token_ids rows, whole rows), as SampleBatch does on
// the host: the caller must not reuse them afterwards. Sample() synchronizes `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/cuda/cuda_handles.h"
#include "common/backend/cuda/kernels/sampling.h"
#include "common/sampling/sampler.h"

namespace tandem {

struct CudaSamplerOptions {
  int64_t vocab_size = 0;    // [1, kSamplingMaxVocab]
  int32_t max_num_rows = 256;  // rows per Sample call, [1, 65535]
};

// The device rows one Sample call reads.
struct DeviceLogits {
  float* values = nullptr;  // [num_rows][row_stride] fp32 on the current device
  int64_t row_stride = 0;   // floats between rows, >= vocab_size
};

class CudaSampler {
 public:
  // Allocates the per-row parameter and result buffers (device and pinned) on the current
  // device. INVALID_ARGUMENT names a bad option; RESOURCE_EXHAUSTED when memory runs out.
  static absl::StatusOr<std::unique_ptr<CudaSampler>> Create(const CudaSamplerOptions& options);

  // One token per row, row order, as SampleBatch(logits, ctx, rows) would return. rows[i]
  // reads logits.values + i * row_stride. INVALID_ARGUMENT names the field for a bad shape,
  // a row's params (SamplingParams::Validate) or a history token id outside the vocabulary;
  // FAILED_PRECONDITION when a sampled row has no finite logit left.
  absl::StatusOr<std::vector<SampledToken>> Sample(const DeviceLogits& logits,
                                                   const SamplingContext& ctx,
                                                   std::span<const SamplingRow> rows,
                                                   cudaStream_t stream);

  // Sample in two halves: Launch validates, queues the kernels on `stream` and returns
  // (rows for the CPU fallback make it wait for their logits first); Collect waits for the
  // launch's end (not for anything queued on `stream` after it) and returns what Sample
  // would. One Collect per Launch, before the next Launch.
  // Errors found by Launch leave nothing pending. Between them the tokens are on the device:
  // row i's token is device_results()[i].token (kernels queued on `stream` after the launch
  // may read it; the pointer is null for an empty launch).
  absl::Status Launch(const DeviceLogits& logits, const SamplingContext& ctx,
                      std::span<const SamplingRow> rows, cudaStream_t stream);
  absl::StatusOr<std::vector<SampledToken>> Collect(cudaStream_t stream);
  bool pending() const { return pending_.has_value(); }
  const SamplingRowResult* device_results() const { return device_results_; }

  // How many rows of the last Sample call went to the CPU fallback.
  int32_t last_num_fallback_rows() const { return last_num_fallback_rows_; }

 private:
  explicit CudaSampler(const CudaSamplerOptions& options) : options_(options) {}
  // What Collect needs of a launch (not the rows: their params may be gone by then).
  struct Pending {
    std::vector<SamplingRowParams> params;
    std::vector<char> with_logprobs;          // per row
    bool copy = false;                         // results_ to results_host_ (not mapped)
    std::vector<size_t> fallback;              // rows sampled on the host
    std::vector<SampledToken> fallback_tokens;  // their tokens, same order
  };
  // Queues the results' copy to the host (when not mapped) and records launched_.
  absl::Status Queue(Pending pending, cudaStream_t stream);
  absl::Status EnsureEditCapacity(size_t num_edits);
  absl::Status EnsureFallbackCapacity(size_t num_rows);

  CudaSamplerOptions options_;
  // Device: [params | repetition penalties | allowed modes | edits]; results separately.
  DeviceBuffer inputs_, results_, edit_values_;
  // LaunchGreedyArgMax's per-block partials and per-row counters (zeroed at creation)
  DeviceBuffer greedy_values_, greedy_indices_, greedy_counters_;
  PinnedBuffer inputs_host_, results_host_, fallback_host_;
  SamplingRowResult* results_mapped_ = nullptr;  // results_host_ as the device sees it
  size_t edit_capacity_ = 0;
  size_t fallback_capacity_rows_ = 0;
  int32_t last_num_fallback_rows_ = 0;
  std::optional<Pending> pending_;
  CudaEvent launched_;  // recorded after a launch's kernels and results copy
  SamplingRowResult* device_results_ = nullptr;  // the pending launch's results
};

}  // namespace tandem
