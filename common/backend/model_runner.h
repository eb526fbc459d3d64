// The one interface every backend (CPU, CUDA) implements, and the plain data it takes.
//
// Schedulers build ForwardInputs and never see a backend type. A batch mixes prefill chunks
// and decode tokens of several sequences: token rows are grouped by sequence
// (query_start[s]..query_start[s+1]), each sequence's tokens have consecutive positions, and
// each token attends to its own sequence's cached tokens at positions <= its own (causal),
// found through that sequence's block table. The runner writes each token's K/V into the
// slot named by slot_mapping before attention reads it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/kv_cache/allocation_plan.h"
#include "common/kv_cache/kv_layer_progress.h"
#include "common/kv_cache/kv_layout.h"
#include "common/model/model_config.h"
#include "common/sampling/sampler.h"

namespace tandem {

// A ForwardInputs::token_ids entry that names a token not yet on the host: the token of row
// `sample_row` of the pending sampling (StartSampleLogits without its FinishSampleLogits).
// The runner reads it where the sampler left it (the CUDA runner: on the device).
constexpr int32_t FedTokenId(int32_t sample_row) { return -1 - sample_row; }
constexpr int32_t FedTokenRow(int32_t token_id) { return -1 - token_id; }  // for id < 0

struct ForwardInputs {
  std::span<const int32_t> token_ids;     // [num_tokens]; FedTokenId(i) entries allowed
  std::span<const int32_t> positions;     // [num_tokens]
  std::span<const int32_t> slot_mapping;  // [num_tokens] -> block_id * block_size + offset
  std::span<const int32_t> query_start;   // [num_seqs + 1] first token row of each sequence
  std::vector<std::span<const int32_t>> block_tables;  // [num_seqs][blocks of that sequence]
  std::span<const int32_t> logits_rows;   // token rows that need logits, ascending
  // Optional (prefill role, overlap with the KV transfer): the runner publishes each
  // layer once its K/V writes are issued (KvLayerProgress::LayerWritten). The engine
  // completes or fails it when Forward returns, so a runner that never publishes is correct,
  // only without overlap.
  KvLayerProgress* kv_progress = nullptr;
  // false: the caller reads the logits only through SampleLogits and CopyLogitsRows, so a
  // runner that keeps them elsewhere (the CUDA runner, on the device) need not copy them to
  // the host; the returned LogitsView may then have empty `values`.
  bool logits_on_host = true;
};

// Logits of the requested rows, row-major [num_rows][vocab_size]. Owned by the runner and
// valid until its next Forward call. `values` may be empty when the caller set
// ForwardInputs::logits_on_host to false (num_rows and vocab_size are still set).
struct LogitsView {
  std::span<const float> values;
  int64_t num_rows = 0;
  int64_t vocab_size = 0;

  std::span<const float> Row(int64_t i) const {
    return values.subspan(static_cast<size_t>(i * vocab_size), static_cast<size_t>(vocab_size));
  }
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  // Runs the model over one batch. InvalidArgument (naming the field) when the inputs are
  // inconsistent: lengths, unsorted rows, positions past max_position_embeddings, slots or
  // block ids outside the pool, a sequence's block table not covering its positions.
  // Only the engine thread calls this.
  virtual absl::StatusOr<LogitsView> Forward(const ForwardInputs& inputs) = 0;

  // Samples rows of the last Forward's logits: one token per entry of `rows`, what
  // SampleBatch (common/sampling/sampler.h) returns for rows[i] on a copy of logits row
  // `logits_rows[i]` (an index into that Forward's logits rows; one row may be named several
  // times, as n > 1 samples fan out from one). `logits` is what that Forward returned. The
  // default copies the rows out of logits.values and runs SampleBatch; a runner that
  // overrides it returns the same tokens and logprobs (the CUDA runner samples on the
  // device). The named rows may be processed in place: read them no more after this call.
  // INVALID_ARGUMENT for bad indices or beam-search rows. Only the engine thread calls this,
  // between one Forward and the next.
  virtual absl::StatusOr<std::vector<SampledToken>> SampleLogits(
      const LogitsView& logits, std::span<const int32_t> logits_rows, const SamplingContext& ctx,
      std::span<const SamplingRow> rows);

  // Pipelined steps (docs/engine.md, "Pipelined decode steps"). StartSampleLogits does what
  // SampleLogits does but may return before the tokens exist; FinishSampleLogits returns
  // them, and by then every Forward called before StartSampleLogits has finished. One Finish
  // follows each Start, before the next Start, SampleLogits or CopyLogitsRows (those are
  // FAILED_PRECONDITION meanwhile, leaving the pending sampling as it is); other errors
  // found at the start are returned by Start, and nothing is then pending. In between, the caller may call Forward once
  // with FedTokenId(i) entries in token_ids: row i's token is fed to that pass without a round
  // trip through the host. The defaults sample at the start (SampleLogits) and keep the
  // tokens until the finish; a runner using them resolves fed ids with ResolveFedTokens.
  virtual absl::Status StartSampleLogits(const LogitsView& logits,
                                         std::span<const int32_t> logits_rows,
                                         const SamplingContext& ctx,
                                         std::span<const SamplingRow> rows);
  virtual absl::StatusOr<std::vector<SampledToken>> FinishSampleLogits();
  // Whether Forward returns before its pass is done (a device runner), so that launching the
  // next step's pass before reading this step's tokens keeps the device busy. The engine
  // pipelines its decode steps by default only then.
  virtual bool OverlapsSteps() const { return false; }

  // Copies rows `logits_rows` of the last Forward's logits (indices as above, rows not given
  // to SampleLogits) into `out` [logits_rows.size()][vocab_size] on the host, for beam search.
  // The default copies from logits.values. Same caller and timing as SampleLogits.
  virtual absl::Status CopyLogitsRows(const LogitsView& logits,
                                      std::span<const int32_t> logits_rows, std::span<float> out);

  // Copies every layer's K and V of each `src` block into its `dst` block (copy-on-write
  // forks for n > 1 and beams), before the next Forward. Only the engine thread calls this.
  virtual absl::Status CopyBlocks(std::span<const BlockCopy> copies) {
    return absl::UnimplementedError("this backend cannot copy KV blocks (n > 1, beams)");
  }

  virtual const ModelConfig& config() const = 0;
  virtual const KvLayout& kv_layout() const = 0;
  virtual int64_t num_kv_blocks() const = 0;

 protected:
  // For runners on the default Start/FinishSampleLogits: how many rows the pending sampling
  // has (0 when none is pending), and `token_ids` with each FedTokenId entry replaced by that
  // row's token, into `out`. INVALID_ARGUMENT naming the entry when it names no pending row.
  int64_t num_pending_sampled_rows() const;
  absl::Status ResolveFedTokens(std::span<const int32_t> token_ids,
                                std::vector<int32_t>& out) const;

 private:
  std::optional<std::vector<SampledToken>> pending_sampled_;  // the default Start's tokens
};

// Shape checks shared by every backend. `num_kv_blocks` and `block_size_tokens` bound the
// slots and block ids; `max_positions` bounds positions; token ids are in [0, vocab_size) or
// FedTokenId(i) with i < `num_fed_rows` (the pending sampling's rows).
absl::Status ValidateForwardInputs(const ForwardInputs& inputs, int64_t num_kv_blocks,
                                   int64_t block_size_tokens, int64_t max_positions,
                                   int64_t vocab_size, int64_t num_fed_rows = 0);

}  // namespace tandem
