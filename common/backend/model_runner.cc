// The host defaults of ModelRunner's sampling seam: the logits are LogitsView::values.
#include "common/backend/model_runner.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem {
namespace {

absl::Status CheckHostRows(const LogitsView& logits, std::span<const int32_t> logits_rows) {
  if (!logits_rows.empty() &&
      logits.values.size() != static_cast<size_t>(logits.num_rows * logits.vocab_size)) {
    return absl::FailedPreconditionError(
        "the logits are not on the host (ForwardInputs::logits_on_host was false)");
  }
  for (size_t i = 0; i < logits_rows.size(); ++i) {
    if (logits_rows[i] < 0 || logits_rows[i] >= logits.num_rows) {
      return absl::InvalidArgumentError(absl::StrCat("logits_rows[", i, "] must be in [0, ",
                                                     logits.num_rows, "), got ", logits_rows[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<SampledToken>> ModelRunner::SampleLogits(
    const LogitsView& logits, std::span<const int32_t> logits_rows, const SamplingContext& ctx,
    std::span<const SamplingRow> rows) {
  if (pending_sampled_) {
    return absl::FailedPreconditionError(
        "a sampling is pending: FinishSampleLogits must come first");
  }
  if (logits_rows.size() != rows.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("logits_rows has ", logits_rows.size(), " entries, rows has ", rows.size()));
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].params->beam_search()) {
      return absl::InvalidArgumentError(
          absl::StrCat("rows[", i, "] is a beam-search row (BeamSearch samples those)"));
    }
  }
  std::vector<float> batch(rows.size() * static_cast<size_t>(logits.vocab_size));
  TANDEM_RETURN_IF_ERROR(CopyLogitsRows(logits, logits_rows, batch));
  return SampleBatch(batch, ctx, rows);
}

absl::Status ModelRunner::CopyLogitsRows(const LogitsView& logits,
                                         std::span<const int32_t> logits_rows,
                                         std::span<float> out) {
  if (pending_sampled_) {
    return absl::FailedPreconditionError(
        "a sampling is pending: FinishSampleLogits must come first");
  }
  TANDEM_RETURN_IF_ERROR(CheckHostRows(logits, logits_rows));
  const auto vocab = static_cast<size_t>(logits.vocab_size);
  if (out.size() != logits_rows.size() * vocab) {
    return absl::InvalidArgumentError(absl::StrCat("out must hold ", logits_rows.size(), " x ",
                                                   vocab, " floats, got ", out.size()));
  }
  for (size_t i = 0; i < logits_rows.size(); ++i) {
    std::span<const float> row = logits.Row(logits_rows[i]);
    std::copy(row.begin(), row.end(), out.begin() + static_cast<std::ptrdiff_t>(i * vocab));
  }
  return absl::OkStatus();
}

absl::Status ModelRunner::StartSampleLogits(const LogitsView& logits,
                                            std::span<const int32_t> logits_rows,
                                            const SamplingContext& ctx,
                                            std::span<const SamplingRow> rows) {
  if (pending_sampled_) {
    return absl::FailedPreconditionError(
        "StartSampleLogits called again before FinishSampleLogits");
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<SampledToken> tokens,
                          SampleLogits(logits, logits_rows, ctx, rows));
  pending_sampled_ = std::move(tokens);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SampledToken>> ModelRunner::FinishSampleLogits() {
  if (!pending_sampled_) {
    return absl::FailedPreconditionError("FinishSampleLogits without a pending StartSampleLogits");
  }
  std::vector<SampledToken> tokens = std::move(*pending_sampled_);
  pending_sampled_.reset();
  return tokens;
}

int64_t ModelRunner::num_pending_sampled_rows() const {
  return pending_sampled_ ? static_cast<int64_t>(pending_sampled_->size()) : 0;
}

absl::Status ModelRunner::ResolveFedTokens(std::span<const int32_t> token_ids,
                                           std::vector<int32_t>& out) const {
  out.assign(token_ids.begin(), token_ids.end());
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] >= 0) continue;
    const int32_t row = FedTokenRow(out[i]);
    if (row >= num_pending_sampled_rows()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "token_ids[", i, "] = ", out[i], " names row ", row, " of the pending sampling, which has ",
          num_pending_sampled_rows(), " rows"));
    }
    out[i] = (*pending_sampled_)[static_cast<size_t>(row)].token_id;
  }
  return absl::OkStatus();
}

}  // namespace tandem
