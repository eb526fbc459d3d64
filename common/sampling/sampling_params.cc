#include "common/sampling/sampling_params.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem {
namespace {

absl::Status Invalid(const std::string& field, const std::string& range, float got) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", range, ", got ", got));
}

absl::Status Invalid(const std::string& field, const std::string& range, int64_t got) {
  return absl::InvalidArgumentError(absl::StrCat(field, " must be ", range, ", got ", got));
}

// NaN fails every comparison, so each check is written as "in range" and negated.
absl::Status CheckFloats(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f && std::isfinite(p.temperature))) {
    return Invalid("temperature", "a finite number >= 0 (0: greedy)", p.temperature);
  }
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return Invalid("top_p", "in (0, 1]", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return Invalid("min_p", "in [0, 1]", p.min_p);
  if (!(p.repetition_penalty > 0.0f && std::isfinite(p.repetition_penalty))) {
    return Invalid("repetition_penalty", "a finite number > 0 (1: off)", p.repetition_penalty);
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return Invalid("presence_penalty", "in [-2, 2]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return Invalid("frequency_penalty", "in [-2, 2]", p.frequency_penalty);
  }
  if (!std::isfinite(p.length_penalty)) {
    return Invalid("length_penalty", "a finite number", p.length_penalty);
  }
  return absl::OkStatus();
}

absl::Status CheckCounts(const SamplingParams& p) {
  if (p.top_k < 0) return Invalid("top_k", ">= 0 (0: off)", int64_t{p.top_k});
  if (p.max_tokens < 1) return Invalid("max_tokens", ">= 1", int64_t{p.max_tokens});
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return Invalid("min_tokens", absl::StrCat("in [0, max_tokens = ", p.max_tokens, "]"),
                   int64_t{p.min_tokens});
  }
  if (p.no_repeat_ngram_size < 0 || p.no_repeat_ngram_size > kMaxNoRepeatNgramSize) {
    return Invalid("no_repeat_ngram_size", absl::StrCat("in [0, ", kMaxNoRepeatNgramSize, "]"),
                   int64_t{p.no_repeat_ngram_size});
  }
  if (p.logprobs && (*p.logprobs < 0 || *p.logprobs > kMaxLogprobs)) {
    return Invalid("logprobs", absl::StrCat("in [0, ", kMaxLogprobs, "]"), int64_t{*p.logprobs});
  }
  if (p.n < 1 || p.n > kMaxN) {
    return Invalid("n", absl::StrCat("in [1, ", kMaxN, "]"), int64_t{p.n});
  }
  if (p.num_beams < 1 || p.num_beams > kMaxBeams) {
    return Invalid("num_beams", absl::StrCat("in [1, ", kMaxBeams, "]"), int64_t{p.num_beams});
  }
  if (p.num_return_sequences < 1 || p.num_return_sequences > p.num_beams) {
    return Invalid("num_return_sequences", absl::StrCat("in [1, num_beams = ", p.num_beams, "]"),
                   int64_t{p.num_return_sequences});
  }
  return absl::OkStatus();
}

// Combinations that would silently do something other than what was asked.
absl::Status CheckModes(const SamplingParams& p) {
  if (p.beam_search() && !p.greedy()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_beams > 1 needs temperature = 0 (beam sampling is not supported), got num_beams = ",
        p.num_beams, " and temperature = ", p.temperature));
  }
  if (p.beam_search() && p.n > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("n must be 1 with beam search (use num_return_sequences), got n = ", p.n));
  }
  if (p.n > 1 && p.greedy()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "n > 1 needs temperature > 0 (greedy samples would all be identical), got n = ", p.n));
  }
  return absl::OkStatus();
}

absl::Status CheckIds(const std::string& field, const std::vector<int32_t>& ids,
                      int64_t vocab_size) {
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size) {
      return Invalid(absl::StrCat(field, " entries"), absl::StrCat("in [0, ", vocab_size, ")"),
                     int64_t{id});
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTokenLists(const SamplingParams& p, int64_t vocab_size) {
  if (p.logit_bias.size() > kMaxLogitBiasEntries) {
    return Invalid("logit_bias size", absl::StrCat("at most ", kMaxLogitBiasEntries),
                   static_cast<int64_t>(p.logit_bias.size()));
  }
  for (const auto& [id, bias] : p.logit_bias) {
    TANDEM_RETURN_IF_ERROR(CheckIds("logit_bias", {id}, vocab_size));
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return Invalid(absl::StrCat("logit_bias[", id, "]"), "in [-100, 100]", bias);
    }
  }
  if (p.stop_token_ids.size() > kMaxStopTokenIds) {
    return Invalid("stop_token_ids size", absl::StrCat("at most ", kMaxStopTokenIds),
                   static_cast<int64_t>(p.stop_token_ids.size()));
  }
  TANDEM_RETURN_IF_ERROR(CheckIds("stop_token_ids", p.stop_token_ids, vocab_size));
  TANDEM_RETURN_IF_ERROR(CheckIds("bad_token_ids", p.bad_token_ids, vocab_size));
  return CheckIds("allowed_token_ids", p.allowed_token_ids, vocab_size);
}

absl::Status CheckStopStrings(const SamplingParams& p) {
  if (p.stop.size() > kMaxStopStrings) {
    return Invalid("stop", absl::StrCat("at most ", kMaxStopStrings, " strings"),
                   static_cast<int64_t>(p.stop.size()));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].empty() || p.stop[i].size() > kMaxStopStringBytes) {
      return Invalid(absl::StrCat("stop[", i, "] length"),
                     absl::StrCat("in [1, ", kMaxStopStringBytes, "] bytes"),
                     static_cast<int64_t>(p.stop[i].size()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SamplingParams::Validate(int64_t vocab_size) const {
  TANDEM_RETURN_IF_ERROR(CheckFloats(*this));
  TANDEM_RETURN_IF_ERROR(CheckCounts(*this));
  TANDEM_RETURN_IF_ERROR(CheckModes(*this));
  TANDEM_RETURN_IF_ERROR(CheckTokenLists(*this, vocab_size));
  return CheckStopStrings(*this);
}

}  // namespace tandem
