#include "common/backend/cuda/cuda_sampler.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/sampling/logits_processors.h"
#include "common/sampling/selection.h"
#include "common/status.h"

namespace tandem {
namespace {

constexpr size_t kInitialEditCapacity = 4096;

size_t AlignUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Byte offsets of the regions of the inputs buffer (same layout on host and device).
struct InputsLayout {
  size_t penalties = 0, allowed = 0, edits = 0, total = 0;
  InputsLayout(size_t max_rows, size_t edit_capacity) {
    penalties = AlignUp(max_rows * sizeof(SamplingRowParams));
    allowed = penalties + AlignUp(max_rows * sizeof(float));
    edits = allowed + AlignUp(max_rows * sizeof(int32_t));
    total = edits + std::max<size_t>(1, edit_capacity) * sizeof(SamplingEdit);
  }
};

absl::Status CheckToken(int32_t token, int64_t vocab_size, size_t row, const char* field) {
  if (token >= 0 && token < vocab_size) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("rows[", row, "].", field, " contains ", token,
                                                 ", outside [0, ", vocab_size, ")"));
}

// The sparse edits of one row: the processors of logits_processors.cc as per-token
// operations applied to the original value in the CPU's order (bias, repetition penalty,
// presence/frequency; -inf for bans wins over everything, since every later stage keeps
// -inf). Returns false when the row needs the CPU fallback.
class RowEditBuilder {
 public:
  RowEditBuilder(int32_t row, std::vector<SamplingEdit>& edits) : row_(row), edits_(edits) {}

  SamplingEdit& At(int32_t token) {
    auto [it, inserted] = index_.try_emplace(token, edits_.size());
    if (inserted) edits_.push_back(SamplingEdit{.row = row_, .token = token});
    return edits_[it->second];
  }
  void Ban(int32_t token) { At(token).flags |= kSamplingEditBan; }

  absl::StatusOr<bool> Build(const SamplingRow& r, const SamplingContext& ctx, size_t row) {
    const SamplingParams& p = *r.params;
    const SequenceSamplingState& s = *r.state;
    const int64_t vocab = ctx.vocab_size;
    absl::flat_hash_set<int32_t> allowed(p.allowed_token_ids.begin(), p.allowed_token_ids.end());
    for (int32_t id : p.allowed_token_ids) At(id);
    for (const auto& [id, bias] : p.logit_bias) {
      if (!allowed.empty() && !allowed.contains(id)) continue;  // -inf whatever its bias
      SamplingEdit& e = At(id);
      if (e.flags & kSamplingEditBias) return false;  // repeated id: the CPU adds twice
      e.flags |= kSamplingEditBias;
      e.bias = bias;
    }
    for (int32_t id : p.bad_token_ids) Ban(id);
    if (s.num_output_tokens() < p.min_tokens) {
      for (int32_t id : p.stop_token_ids) Ban(id);
      if (!p.ignore_eos) {
        for (int32_t id : ctx.eos_token_ids) Ban(id);
      }
    }
    if (p.repetition_penalty != 1.0f) {
      for (int32_t id : s.prompt_token_set) {
        TANDEM_RETURN_IF_ERROR(CheckToken(id, vocab, row, "state.prompt_token_set"));
        At(id).flags |= kSamplingEditRepetition;
      }
      for (const auto& [id, count] : s.output_token_counts) {
        TANDEM_RETURN_IF_ERROR(CheckToken(id, vocab, row, "state.output_token_counts"));
        At(id).flags |= kSamplingEditRepetition;
      }
    }
    if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
      for (const auto& [id, count] : s.output_token_counts) {
        TANDEM_RETURN_IF_ERROR(CheckToken(id, vocab, row, "state.output_token_counts"));
        SamplingEdit& e = At(id);
        e.flags |= kSamplingEditSubtract;
        // The CPU's expression, evaluated in float on the host as there.
        e.subtract = static_cast<float>(count) * p.frequency_penalty + p.presence_penalty;
      }
    }
    if (p.no_repeat_ngram_size > 0) {
      for (int32_t id : s.prompt_ids) {
        TANDEM_RETURN_IF_ERROR(CheckToken(id, vocab, row, "state.prompt_ids"));
      }
      for (int32_t id : s.output_ids) {
        TANDEM_RETURN_IF_ERROR(CheckToken(id, vocab, row, "state.output_ids"));
      }
      ForEachRepeatedNgramBan(s, static_cast<size_t>(p.no_repeat_ngram_size),
                              [&](int32_t id) { Ban(id); });
    }
    if (!allowed.empty()) {
      for (const auto& [token, index] : index_) {
        if (!allowed.contains(token)) edits_[index].flags |= kSamplingEditBan;
      }
    }
    return true;
  }

 private:
  int32_t row_;
  std::vector<SamplingEdit>& edits_;
  absl::flat_hash_map<int32_t, size_t> index_;
};

SamplingRowParams RowParams(const SamplingRow& r) {
  const SamplingParams& p = *r.params;
  SamplingRowParams out;
  out.greedy = p.greedy() ? 1 : 0;
  out.temperature = p.temperature;
  out.top_k = p.top_k;
  out.top_p = p.top_p;
  out.min_p = p.min_p;
  out.logprobs = p.logprobs ? *p.logprobs : -1;
  out.uniform = p.greedy() ? 0.0 : UniformForPosition(r.state->seed, r.state->next_position());
  return out;
}

SampledToken ToSampledToken(const SamplingRowResult& r, bool with_logprobs) {
  SampledToken out{.token_id = r.token};
  if (!with_logprobs) return out;
  SampledLogprobs logprobs{.chosen = {r.token, r.chosen_logprob}};
  for (int32_t i = 0; i < r.num_top; ++i) logprobs.top.push_back({r.top_ids[i], r.top_logprobs[i]});
  out.logprobs = std::move(logprobs);
  return out;
}

std::vector<char> WithLogprobs(std::span<const SamplingRow> rows) {
  std::vector<char> with(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) with[i] = rows[i].params->logprobs.has_value();
  return with;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaSampler>> CudaSampler::Create(const CudaSamplerOptions& o) {
  if (o.vocab_size <= 0 || o.vocab_size > kSamplingMaxVocab) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size must be in [1, ",
                                                   kSamplingMaxVocab, "], got ", o.vocab_size));
  }
  if (o.max_num_rows <= 0 || o.max_num_rows > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_num_rows must be in [1, 65535], got ", o.max_num_rows));
  }
  std::unique_ptr<CudaSampler> sampler(new CudaSampler(o));
  const size_t rows = static_cast<size_t>(o.max_num_rows);
  TANDEM_ASSIGN_OR_RETURN(sampler->results_,
                          DeviceBuffer::Allocate(rows * sizeof(SamplingRowResult)));
  TANDEM_ASSIGN_OR_RETURN(sampler->results_host_,
                          PinnedBuffer::Allocate(rows * sizeof(SamplingRowResult)));
  void* mapped = nullptr;
  if (cudaHostGetDevicePointer(&mapped, sampler->results_host_.data(), 0) == cudaSuccess) {
    sampler->results_mapped_ = static_cast<SamplingRowResult*>(mapped);
  } else {
    (void)cudaGetLastError();  // not mapped: results come back by copy
  }
  TANDEM_RETURN_IF_ERROR(sampler->EnsureEditCapacity(kInitialEditCapacity));
  const size_t partials = rows * kGreedyArgMaxBlocks;
  TANDEM_ASSIGN_OR_RETURN(sampler->greedy_values_, DeviceBuffer::Allocate(partials * 4));
  TANDEM_ASSIGN_OR_RETURN(sampler->greedy_indices_, DeviceBuffer::Allocate(partials * 4));
  TANDEM_ASSIGN_OR_RETURN(sampler->greedy_counters_, DeviceBuffer::Allocate(rows * 4));
  TANDEM_ASSIGN_OR_RETURN(sampler->launched_, CudaEvent::CreateWithoutTiming());
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMemset(sampler->greedy_counters_.data(), 0, sampler->greedy_counters_.size_bytes()));
  return sampler;
}

absl::Status CudaSampler::EnsureEditCapacity(size_t num_edits) {
  if (num_edits <= edit_capacity_ && inputs_.size_bytes() > 0) return absl::OkStatus();
  const size_t capacity = std::max(num_edits, 2 * edit_capacity_);
  const InputsLayout layout(static_cast<size_t>(options_.max_num_rows), capacity);
  TANDEM_ASSIGN_OR_RETURN(inputs_, DeviceBuffer::Allocate(layout.total));
  TANDEM_ASSIGN_OR_RETURN(inputs_host_, PinnedBuffer::Allocate(layout.total));
  TANDEM_ASSIGN_OR_RETURN(edit_values_,
                          DeviceBuffer::Allocate(std::max<size_t>(1, capacity) * sizeof(float)));
  edit_capacity_ = capacity;
  return absl::OkStatus();
}

absl::Status CudaSampler::EnsureFallbackCapacity(size_t num_rows) {
  if (num_rows <= fallback_capacity_rows_) return absl::OkStatus();
  TANDEM_ASSIGN_OR_RETURN(fallback_host_, PinnedBuffer::Allocate(
                                              num_rows * options_.vocab_size * sizeof(float)));
  fallback_capacity_rows_ = num_rows;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SampledToken>> CudaSampler::Collect(cudaStream_t stream) {
  if (!pending_) return absl::FailedPreconditionError("Collect without a launched sampling");
  Pending p = std::move(*pending_);
  pending_.reset();
  const size_t num_rows = p.params.size();
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(launched_.get()));
  std::vector<SampledToken> out(num_rows);
  const SamplingRowResult* results = results_host_.as<SamplingRowResult>();
  for (size_t i = 0; i < num_rows; ++i) {
    if (p.params[i].skip) continue;
    if (results[i].token < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("rows[", i, "] has no finite logit left to draw from"));
    }
    out[i] = ToSampledToken(results[i], p.with_logprobs[i] != 0);
  }
  for (size_t f = 0; f < p.fallback.size(); ++f) out[p.fallback[f]] = std::move(p.fallback_tokens[f]);
  return out;
}

absl::StatusOr<std::vector<SampledToken>> CudaSampler::Sample(const DeviceLogits& logits,
                                                              const SamplingContext& ctx,
                                                              std::span<const SamplingRow> rows,
                                                              cudaStream_t stream) {
  TANDEM_RETURN_IF_ERROR(Launch(logits, ctx, rows, stream));
  return Collect(stream);
}

absl::Status CudaSampler::Launch(const DeviceLogits& logits, const SamplingContext& ctx,
                                 std::span<const SamplingRow> rows, cudaStream_t stream) {
  if (pending_) return absl::FailedPreconditionError("Launch before the last launch's Collect");
  const int64_t vocab = options_.vocab_size;
  if (ctx.vocab_size != vocab) {
    return absl::InvalidArgumentError(absl::StrCat("ctx.vocab_size must be the sampler's ", vocab,
                                                   ", got ", ctx.vocab_size));
  }
  if (rows.size() > static_cast<size_t>(options_.max_num_rows)) {
    return absl::InvalidArgumentError(absl::StrCat("rows must have at most max_num_rows (",
                                                   options_.max_num_rows, ") entries, got ",
                                                   rows.size()));
  }
  last_num_fallback_rows_ = 0;
  if (rows.empty()) {
    device_results_ = nullptr;
    return Queue(Pending{}, stream);  // Collect still waits for what was queued before
  }
  if (logits.values == nullptr) return absl::InvalidArgumentError("logits.values is null");
  if (logits.row_stride < vocab) {
    return absl::InvalidArgumentError(absl::StrCat("logits.row_stride must be >= vocab_size (",
                                                   vocab, "), got ", logits.row_stride));
  }
  for (int32_t id : ctx.eos_token_ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("ctx.eos_token_ids contains ", id,
                                                     ", outside [0, ", vocab, ")"));
    }
  }

  const size_t num_rows = rows.size();
  std::vector<SamplingRowParams> params(num_rows);
  std::vector<float> penalties(num_rows);
  std::vector<int32_t> allowed_mode(num_rows);
  std::vector<SamplingEdit> edits;
  std::vector<size_t> fallback;
  for (size_t i = 0; i < num_rows; ++i) {
    const SamplingRow& r = rows[i];
    if (r.params == nullptr || r.state == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("rows[", i, "] has a null params or state"));
    }
    if (r.params->beam_search()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rows[", i, "].params.num_beams must be 1 (beam search runs in BeamSearch), got ",
                       r.params->num_beams));
    }
    if (absl::Status s = r.params->Validate(vocab); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("rows[", i, "].params: ", s.message()));
    }
    params[i] = RowParams(r);
    penalties[i] = r.params->repetition_penalty;
    allowed_mode[i] = r.params->allowed_token_ids.empty() ? 0 : 1;
    const size_t first_edit = edits.size();
    RowEditBuilder builder(static_cast<int32_t>(i), edits);
    TANDEM_ASSIGN_OR_RETURN(bool on_gpu, builder.Build(r, ctx, i));
    if (!on_gpu) {
      edits.resize(first_edit);
      params[i].skip = 1;
      allowed_mode[i] = 0;
      fallback.push_back(i);
    }
  }
  last_num_fallback_rows_ = static_cast<int32_t>(fallback.size());
  TANDEM_RETURN_IF_ERROR(EnsureEditCapacity(edits.size()));
  TANDEM_RETURN_IF_ERROR(EnsureFallbackCapacity(fallback.size()));

  // Greedy rows with no logprobs, edits or host fallback (plain greedy decoding; a row with
  // allowed_token_ids has an edit per id): the argmax kernel alone, nothing to upload.
  const bool greedy_only =
      edits.empty() && fallback.empty() &&
      std::all_of(params.begin(), params.end(), [](const SamplingRowParams& p) {
        return p.greedy != 0 && p.logprobs < 0;
      });
  if (greedy_only) {
    // The tokens go straight to the pinned host buffer (mapped into the device's address
    // space): no copy after the kernel (~8 us less per call on the H200).
    SamplingRowResult* out =
        results_mapped_ != nullptr ? results_mapped_ : results_.as<SamplingRowResult>();
    TANDEM_RETURN_IF_ERROR(LaunchGreedyArgMax(
        {.logits = logits.values, .row_stride = logits.row_stride, .vocab_size = vocab,
         .num_rows = static_cast<int32_t>(num_rows), .results = out,
         .partial_values = greedy_values_.as<float>(),
         .partial_indices = greedy_indices_.as<int32_t>(),
         .counters = greedy_counters_.as<uint32_t>()},
        stream));
    device_results_ = out;
    return Queue(Pending{.params = std::move(params), .with_logprobs = WithLogprobs(rows),
                         .copy = out != results_mapped_},
                 stream);
  }

  // One upload of params, penalties, allowed modes and edits.
  const InputsLayout layout(static_cast<size_t>(options_.max_num_rows), edit_capacity_);
  char* host = inputs_host_.as<char>();
  std::memcpy(host, params.data(), num_rows * sizeof(SamplingRowParams));
  std::memcpy(host + layout.penalties, penalties.data(), num_rows * sizeof(float));
  std::memcpy(host + layout.allowed, allowed_mode.data(), num_rows * sizeof(int32_t));
  std::memcpy(host + layout.edits, edits.data(), edits.size() * sizeof(SamplingEdit));
  const size_t upload_bytes = layout.edits + edits.size() * sizeof(SamplingEdit);
  TANDEM_CUDA_CHECK(cudaMemcpyAsync(inputs_.data(), host, upload_bytes, cudaMemcpyHostToDevice,
                                    stream));
  // Fallback rows leave with their original logits, before any edit.
  for (size_t f = 0; f < fallback.size(); ++f) {
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(fallback_host_.as<float>() + f * vocab,
                                      logits.values + fallback[f] * logits.row_stride,
                                      vocab * sizeof(float), cudaMemcpyDeviceToHost, stream));
  }

  char* device = inputs_.as<char>();
  SamplingEditArgs edit_args{
      .logits = logits.values,
      .row_stride = logits.row_stride,
      .vocab_size = vocab,
      .num_rows = static_cast<int32_t>(num_rows),
      .edits = reinterpret_cast<const SamplingEdit*>(device + layout.edits),
      .num_edits = static_cast<int64_t>(edits.size()),
      .repetition_penalty = reinterpret_cast<const float*>(device + layout.penalties),
      .allowed_mode = reinterpret_cast<const int32_t*>(device + layout.allowed),
      .any_allowed_mode = std::any_of(allowed_mode.begin(), allowed_mode.end(),
                                      [](int32_t m) { return m != 0; }),
      .edit_values = edit_values_.as<float>(),
  };
  TANDEM_RETURN_IF_ERROR(LaunchApplySamplingEdits(edit_args, stream));
  SampleRowsArgs sample_args{
      .logits = logits.values,
      .row_stride = logits.row_stride,
      .vocab_size = vocab,
      .num_rows = static_cast<int32_t>(num_rows),
      .params = reinterpret_cast<const SamplingRowParams*>(device),
      .results = results_.as<SamplingRowResult>(),
  };
  TANDEM_RETURN_IF_ERROR(LaunchSampleRows(sample_args, stream));
  device_results_ = results_.as<SamplingRowResult>();
  Pending pending{.params = std::move(params), .with_logprobs = WithLogprobs(rows),
                  .copy = true, .fallback = fallback};
  if (!fallback.empty()) {
    // The fallback rows' logits reach the host here (a synchronization); their tokens go
    // into the device results as well, where a fed pass reads them.
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    std::vector<float> host_logits(fallback_host_.as<float>(),
                                   fallback_host_.as<float>() + fallback.size() * vocab);
    std::vector<SamplingRow> host_rows;
    for (size_t i : fallback) host_rows.push_back(rows[i]);
    pending.fallback_tokens = SampleBatch(host_logits, ctx, host_rows);
    for (size_t f = 0; f < fallback.size(); ++f) {
      TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&device_results_[fallback[f]].token,
                                                  &pending.fallback_tokens[f].token_id,
                                                  sizeof(int32_t), cudaMemcpyHostToDevice,
                                                  stream));
    }
  }
  return Queue(std::move(pending), stream);
}

absl::Status CudaSampler::Queue(Pending pending, cudaStream_t stream) {
  // The results leave now, ahead of whatever the caller queues next (the next pass), and
  // Collect waits for this point only.
  if (pending.copy && !pending.params.empty()) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(results_host_.data(), results_.data(),
                                                pending.params.size() * sizeof(SamplingRowResult),
                                                cudaMemcpyDeviceToHost, stream));
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(launched_.get(), stream));
  pending_ = std::move(pending);
  return absl::OkStatus();
}

}  // namespace tandem
