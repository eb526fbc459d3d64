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

namespace {

absl::Status CheckSamplingCall(std::span<const int32_t> logits_rows,
                               std::span<const SamplingRow> rows, int64_t pending_rows) {
  if (pending_rows >= 0) {
    return absl::FailedPreconditionError(
        "a sampling is pending: FinishSampleLogits must come first");
  }
  if (logits_rows.size() != rows.size()) {
    return absl::InvalidArgumentError(absl::StrCat("logits_rows has ", logits_rows.size(),
                                                   " entries, rows has ", rows.size()));
  }
  return absl::OkStatus();
}

bool Consecutive(std::span<const int32_t> logits_rows) {
  for (size_t i = 1; i < logits_rows.size(); ++i) {
    if (logits_rows[i] != logits_rows[0] + static_cast<int32_t>(i)) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::vector<SampledToken>> CudaModelRunner::SampleLogits(
    const LogitsView& logits, std::span<const int32_t> logits_rows, const SamplingContext& ctx,
    std::span<const SamplingRow> rows) {
  if (sampler_ == nullptr) return ModelRunner::SampleLogits(logits, logits_rows, ctx, rows);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  absl::Status valid = CheckSamplingCall(logits_rows, rows, pending_rows_);
  if (valid.ok()) valid = CheckLogitsRows(logits, logits_rows);
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
  const bool consecutive = Consecutive(logits_rows);
  const size_t chunk = consecutive ? static_cast<size_t>(std::min<int64_t>(
                                         options_.max_logits_rows, kMaxSamplerRows))
                                   : static_cast<size_t>(scratch_rows_);
  std::vector<SampledToken> out;
  out.reserve(rows.size());
  for (size_t first = 0; first < rows.size(); first += chunk) {
    const size_t count = std::min(chunk, rows.size() - first);
    TANDEM_ASSIGN_OR_RETURN(DeviceLogits device,
                            SamplerRows(logits_rows.subspan(first, count), consecutive));
    TANDEM_ASSIGN_OR_RETURN(std::vector<SampledToken> tokens,
                            sampler_->Sample(device, ctx, rows.subspan(first, count),
                                             stream_.get()));
    logits_counts_.device_sampled_rows += static_cast<int64_t>(count);
    logits_counts_.fallback_rows += sampler_->last_num_fallback_rows();
    for (SampledToken& token : tokens) out.push_back(std::move(token));
  }
  return out;
}

absl::StatusOr<DeviceLogits> CudaModelRunner::SamplerRows(std::span<const int32_t> logits_rows,
                                                          bool consecutive) {
  if (!consecutive) {
    logits_counts_.gathered_rows += static_cast<int64_t>(logits_rows.size());
    return GatherLogitsRows(logits_rows);
  }
  const int64_t first = logits_rows.empty() ? 0 : logits_rows[0];
  return DeviceLogits{.values = logits_.as<float>() + first * config_.vocab_size,
                      .row_stride = config_.vocab_size};
}

absl::Status CudaModelRunner::StartSampleLogits(const LogitsView& logits,
                                                std::span<const int32_t> logits_rows,
                                                const SamplingContext& ctx,
                                                std::span<const SamplingRow> rows) {
  if (sampler_ == nullptr) return ModelRunner::StartSampleLogits(logits, logits_rows, ctx, rows);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  TANDEM_RETURN_IF_ERROR(CheckSamplingCall(logits_rows, rows, pending_rows_));
  absl::Status status = CheckLogitsRows(logits, logits_rows);
  const bool consecutive = Consecutive(logits_rows);
  const auto one_launch = static_cast<size_t>(
      consecutive ? std::min<int64_t>(options_.max_logits_rows, kMaxSamplerRows) : scratch_rows_);
  if (status.ok() && rows.size() > one_launch) {
    // More rows than one launch takes: sampled now, the tokens kept on the host.
    absl::StatusOr<std::vector<SampledToken>> tokens = SampleLogits(logits, logits_rows, ctx, rows);
    if (!tokens.ok()) return tokens.status();
    pending_host_tokens_ = std::move(*tokens);
    pending_rows_ = static_cast<int64_t>(rows.size());
    return absl::OkStatus();
  }
  if (status.ok()) {
    absl::StatusOr<DeviceLogits> device = SamplerRows(logits_rows, consecutive);
    status = device.ok() ? sampler_->Launch(*device, ctx, rows, stream_.get()) : device.status();
  }
  if (!status.ok()) {
    // As SampleLogits: the pass (and anything queued after it) is finished on every path.
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    return status;
  }
  logits_counts_.device_sampled_rows += static_cast<int64_t>(rows.size());
  logits_counts_.fallback_rows += sampler_->last_num_fallback_rows();
  pending_rows_ = static_cast<int64_t>(rows.size());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SampledToken>> CudaModelRunner::FinishSampleLogits() {
  if (sampler_ == nullptr) return ModelRunner::FinishSampleLogits();
  if (pending_rows_ < 0) {
    return absl::FailedPreconditionError("FinishSampleLogits without a pending StartSampleLogits");
  }
  pending_rows_ = -1;
  if (pending_host_tokens_) {
    std::vector<SampledToken> tokens = std::move(*pending_host_tokens_);
    pending_host_tokens_.reset();
    return tokens;  // SampleLogits waited for everything queued before the start
  }
  absl::StatusOr<std::vector<SampledToken>> tokens = sampler_->Collect(stream_.get());
  if (!tokens.ok()) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
  }
  return tokens;
}

absl::Status CudaModelRunner::CopyLogitsRows(const LogitsView& logits,
                                             std::span<const int32_t> logits_rows,
                                             std::span<float> out) {
  if (!logits.values.empty()) return ModelRunner::CopyLogitsRows(logits, logits_rows, out);
  if (pending_rows_ >= 0) {  // the pending sampling may be editing the rows in place
    return absl::FailedPreconditionError(
        "a sampling is pending: FinishSampleLogits must come first");
  }
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
