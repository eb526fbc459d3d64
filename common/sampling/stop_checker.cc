#include "common/sampling/stop_checker.h"

#include <algorithm>

#include "common/sampling/stop_strings.h"

namespace tandem {

StopChecker::StopChecker(const Tokenizer& tokenizer, const SamplingParams& params,
                         std::span<const int32_t> eos_token_ids,
                         std::span<const int32_t> prompt_ids, bool skip_special_tokens)
    : detokenizer_(tokenizer, prompt_ids, {.skip_special_tokens = skip_special_tokens}),
      stop_strings_(params.stop),
      stop_token_ids_(params.stop_token_ids),
      min_tokens_(params.min_tokens),
      max_tokens_(params.max_tokens),
      include_stop_(params.include_stop_str_in_output) {
  if (!params.ignore_eos) {
    stop_token_ids_.insert(stop_token_ids_.end(), eos_token_ids.begin(), eos_token_ids.end());
  }
}

bool StopChecker::IsStopToken(int32_t token) const {
  return std::find(stop_token_ids_.begin(), stop_token_ids_.end(), token) != stop_token_ids_.end();
}

void StopChecker::Finish(SequenceSamplingState& state, StopVerdict& verdict, FinishReason reason) {
  StopStringMatch tail =
      MatchStopStrings(state.held_text, stop_strings_, detokenizer_.Flush(), include_stop_);
  verdict.text += tail.released + state.held_text;
  state.held_text.clear();
  verdict.finish = reason;
  if (tail.matched) {
    verdict.finish = FinishReason::kStop;
    verdict.stop_string = tail.stop;
  }
}

StopVerdict StopChecker::EndForLength(SequenceSamplingState& state) {
  StopVerdict verdict;
  Finish(state, verdict, FinishReason::kLength);
  return verdict;
}

StopVerdict StopChecker::Push(SequenceSamplingState& state, int32_t token) {
  StopVerdict verdict;
  bool stops_allowed = state.num_output_tokens() >= min_tokens_;
  if (stops_allowed && IsStopToken(token)) {
    verdict.stop_token_id = token;
    Finish(state, verdict, FinishReason::kStop);
    return verdict;
  }
  std::string delta = detokenizer_.Push(token);
  if (stops_allowed && !stop_strings_.empty()) {
    StopStringMatch match = MatchStopStrings(state.held_text, stop_strings_, delta, include_stop_);
    verdict.text = std::move(match.released);
    if (match.matched) {
      verdict.finish = FinishReason::kStop;
      verdict.stop_string = std::move(match.stop);
      return verdict;
    }
  } else {
    verdict.text = state.held_text + delta;
    state.held_text.clear();
  }
  if (state.num_output_tokens() >= max_tokens_) Finish(state, verdict, FinishReason::kLength);
  return verdict;
}

}  // namespace tandem
