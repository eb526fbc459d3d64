// CudaModelRunner after a pass: the logits rows sampled on the device (SampleLogits through
// the CudaSampler) or copied to the host (CopyLogitsRows). The pass itself is
// cuda_model_runner.cc.
#include "common/backend/cuda/cuda_model_runner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/status.h"

namespace tandem {

absl::Status CudaModelRunner::CheckLogitsRows(const LogitsView& logits,
                                              std::span<const int32_t> logits_rows) const {
  if (logits.vocab_size != config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("logits.vocab_size must be ",
                                                   config_.vocab_size, ", got ",
                                                   logits.vocab_size));
  }
  for (size_t i = 0; i < logits_rows.size(); ++i) {
    if (logits_rows[i] < 0 || logits_rows[i] >= logits.num_rows) {
      return absl::InvalidArgumentError(absl::StrCat("logits_rows[", i, "] must be in [0, ",
                                                     logits.num_rows, "), got ", logits_rows[i]));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DeviceLogits> CudaModelRunner::GatherLogitsRows(std::span<const int32_t> sources) {
  const auto vocab = static_cast<size_t>(config_.vocab_size);
  float* scratch = sample_scratch_.as<float>();
  for (size_t first = 0; first < sources.size();) {
    size_t count = 1;
    while (first + count < sources.size() &&
           sources[first + count] == sources[first] + static_cast<int32_t>(count)) {
      ++count;
    }
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        scratch + first * vocab, logits_.as<float>() + sources[first] * vocab,
        count * vocab * sizeof(float), cudaMemcpyDeviceToDevice, stream_.get()));
    first += count;
  }
  return DeviceLogits{.values = scratch, .row_stride = static_cast<int64_t>(vocab)};
}

absl::StatusOr<std::vector<SampledToken>> CudaModelRunner::SampleLogits(
    const LogitsView& logits, std::span<const int32_t> logits_rows, const SamplingContext& ctx,
    std::span<const SamplingRow> rows) {
  if (sampler_ == nullptr) return ModelRunner::SampleLogits(logits, logits_rows, ctx, rows);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  absl::Status valid = logits_rows.size() == rows.size()
                           ? CheckLogitsRows(logits, logits_rows)
                           : absl::InvalidArgumentError(absl::StrCat(
                                 "logits_rows has ", logits_rows.size(), " entries, rows has ",
                                 rows.size()));
  absl::StatusOr<std::vector<SampledToken>> out =
      valid.ok() ? SampleOnDevice(logits_rows, ctx, rows)
                 : absl::StatusOr<std::vector<SampledToken>>(valid);
  // The pass Forward left running (and anything queued after it) is finished on every path.
  if (!out.ok()) TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
  return out;
}

absl::StatusOr<std::vector<SampledToken>> CudaModelRunner::SampleOnDevice(
    std::span<const int32_t> logits_rows, const SamplingContext& ctx,
    std::span<const SamplingRow> rows) {
  // Rows named once and consecutively (every plain decode step) are sampled where they
  // are; otherwise every row is gathered first, so no row is edited before its last copy.
  bool consecutive = true;
  for (size_t i = 1; i < logits_rows.size(); ++i) {
    consecutive = consecutive && logits_rows[i] == logits_rows[0] + static_cast<int32_t>(i);
  }
  const size_t chunk = consecutive ? static_cast<size_t>(std::min<int64_t>(
                                         options_.max_logits_rows, kMaxSamplerRows))
                                   : static_cast<size_t>(scratch_rows_);
  const int64_t vocab = config_.vocab_size;
  std::vector<SampledToken> out;
  out.reserve(rows.size());
  for (size_t first = 0; first < rows.size(); first += chunk) {
    const size_t count = std::min(chunk, rows.size() - first);
    std::span<const int32_t> sources = logits_rows.subspan(first, count);
    DeviceLogits device{.values = logits_.as<float>() + sources[0] * vocab, .row_stride = vocab};
    if (!consecutive) {
      TANDEM_ASSIGN_OR_RETURN(device, GatherLogitsRows(sources));
      logits_counts_.gathered_rows += static_cast<int64_t>(count);
    }
    TANDEM_ASSIGN_OR_RETURN(std::vector<SampledToken> tokens,
                            sampler_->Sample(device, ctx, rows.subspan(first, count),
                                             stream_.get()));
    logits_counts_.device_sampled_rows += static_cast<int64_t>(count);
    logits_counts_.fallback_rows += sampler_->last_num_fallback_rows();
    for (SampledToken& token : tokens) out.push_back(std::move(token));
  }
  return out;
}

absl::Status CudaModelRunner::CopyLogitsRows(const LogitsView& logits,
                                             std::span<const int32_t> logits_rows,
                                             std::span<float> out) {
  if (!logits.values.empty()) return ModelRunner::CopyLogitsRows(logits, logits_rows, out);
  TANDEM_RETURN_IF_ERROR(CheckLogitsRows(logits, logits_rows));
  const auto vocab = static_cast<size_t>(config_.vocab_size);
  if (out.size() != logits_rows.size() * vocab) {
    return absl::InvalidArgumentError(absl::StrCat("out must hold ", logits_rows.size(), " x ",
                                                   vocab, " floats, got ", out.size()));
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  logits_counts_.host_rows += static_cast<int64_t>(logits_rows.size());
  for (size_t i = 0; i < logits_rows.size(); ++i) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        out.data() + i * vocab, logits_.as<float>() + logits_rows[i] * vocab,
        vocab * sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
  return absl::OkStatus();
}

}  // namespace tandem
