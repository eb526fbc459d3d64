#include "common/api/api_convert.h"

namespace tandem {
namespace {

EarlyStopping EarlyStoppingFromProto(v1::EarlyStopping e) {
  switch (e) {
    case v1::EARLY_STOPPING_EAGER:
      return EarlyStopping::kEager;
    case v1::EARLY_STOPPING_NEVER:
      return EarlyStopping::kNever;
    default:
      return EarlyStopping::kHeuristic;
  }
}

v1::EarlyStopping EarlyStoppingToProto(EarlyStopping e) {
  switch (e) {
    case EarlyStopping::kHeuristic:
      return v1::EARLY_STOPPING_HEURISTIC;
    case EarlyStopping::kEager:
      return v1::EARLY_STOPPING_EAGER;
    case EarlyStopping::kNever:
      return v1::EARLY_STOPPING_NEVER;
  }
  return v1::EARLY_STOPPING_HEURISTIC;
}

}  // namespace

absl::StatusOr<SamplingParams> SamplingParamsFromProto(const v1::SamplingParams& p,
                                                       int64_t vocab_size) {
  SamplingParams s;
  if (p.has_temperature()) s.temperature = p.temperature();
  if (p.has_top_k()) s.top_k = p.top_k();
  if (p.has_top_p()) s.top_p = p.top_p();
  if (p.has_min_p()) s.min_p = p.min_p();
  if (p.has_repetition_penalty()) s.repetition_penalty = p.repetition_penalty();
  if (p.has_presence_penalty()) s.presence_penalty = p.presence_penalty();
  if (p.has_frequency_penalty()) s.frequency_penalty = p.frequency_penalty();
  if (p.has_no_repeat_ngram_size()) s.no_repeat_ngram_size = p.no_repeat_ngram_size();
  for (const auto& [token, bias] : p.logit_bias()) s.logit_bias.emplace_back(token, bias);
  std::sort(s.logit_bias.begin(), s.logit_bias.end());  // map order is unspecified
  s.bad_token_ids.assign(p.bad_token_ids().begin(), p.bad_token_ids().end());
  s.allowed_token_ids.assign(p.allowed_token_ids().begin(), p.allowed_token_ids().end());
  if (p.has_min_tokens()) s.min_tokens = p.min_tokens();
  if (p.has_max_tokens()) s.max_tokens = p.max_tokens();
  s.stop.assign(p.stop().begin(), p.stop().end());
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.ignore_eos = p.ignore_eos();
  s.include_stop_str_in_output = p.include_stop_str_in_output();
  if (p.has_seed()) s.seed = p.seed();
  if (p.has_logprobs()) s.logprobs = p.logprobs();
  if (p.has_n()) s.n = p.n();
  if (p.has_num_beams()) s.num_beams = p.num_beams();
  if (p.has_length_penalty()) s.length_penalty = p.length_penalty();
  s.early_stopping = EarlyStoppingFromProto(p.early_stopping());
  if (p.has_num_return_sequences()) s.num_return_sequences = p.num_return_sequences();
  if (absl::Status status = s.Validate(vocab_size); !status.ok()) return status;
  return s;
}

void SamplingParamsToProto(const SamplingParams& s, v1::SamplingParams* p) {
  p->set_temperature(s.temperature);
  p->set_top_k(s.top_k);
  p->set_top_p(s.top_p);
  p->set_min_p(s.min_p);
  p->set_repetition_penalty(s.repetition_penalty);
  p->set_presence_penalty(s.presence_penalty);
  p->set_frequency_penalty(s.frequency_penalty);
  p->set_no_repeat_ngram_size(s.no_repeat_ngram_size);
  for (const auto& [token, bias] : s.logit_bias) (*p->mutable_logit_bias())[token] = bias;
  for (int32_t id : s.bad_token_ids) p->add_bad_token_ids(id);
  for (int32_t id : s.allowed_token_ids) p->add_allowed_token_ids(id);
  p->set_min_tokens(s.min_tokens);
  p->set_max_tokens(s.max_tokens);
  for (const std::string& stop : s.stop) p->add_stop(stop);
  for (int32_t id : s.stop_token_ids) p->add_stop_token_ids(id);
  p->set_ignore_eos(s.ignore_eos);
  p->set_include_stop_str_in_output(s.include_stop_str_in_output);
  if (s.seed) p->set_seed(*s.seed);
  if (s.logprobs) p->set_logprobs(*s.logprobs);
  p->set_n(s.n);
  p->set_num_beams(s.num_beams);
  p->set_length_penalty(s.length_penalty);
  p->set_early_stopping(EarlyStoppingToProto(s.early_stopping));
  p->set_num_return_sequences(s.num_return_sequences);
}

v1::FinishReason FinishReasonToProto(OutputFinish finish) {
  switch (finish) {
    case OutputFinish::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case OutputFinish::kStop:
      return v1::FINISH_REASON_STOP;
    case OutputFinish::kLength:
      return v1::FINISH_REASON_LENGTH;
    case OutputFinish::kAbort:
      return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void LogprobsToProto(const SampledLogprobs& l, v1::TokenLogprob* p) {
  p->set_token_id(l.chosen.token_id);
  p->set_logprob(l.chosen.logprob);
  for (const TokenLogprob& t : l.top) {
    v1::TopLogprob* top = p->add_top();
    top->set_token_id(t.token_id);
    top->set_logprob(t.logprob);
  }
}

SampledLogprobs LogprobsFromProto(const v1::TokenLogprob& p) {
  SampledLogprobs l{.chosen = {p.token_id(), p.logprob()}};
  for (const v1::TopLogprob& t : p.top()) l.top.push_back({t.token_id(), t.logprob()});
  return l;
}

void OutputToDelta(const EngineOutput& o, v1::Delta* delta) {
  delta->set_index(o.index);
  for (int32_t id : o.token_ids) delta->add_token_ids(id);
  delta->set_text(o.text);
  for (const SampledLogprobs& l : o.logprobs) LogprobsToProto(l, delta->add_logprobs());
}

void OutputToFinished(const EngineOutput& o, v1::Finished* f) {
  f->set_index(o.index);
  f->set_finish_reason(FinishReasonToProto(o.finish));
  f->set_stop(o.stop);
  f->set_seed(o.seed);
  f->set_score(o.score);
  v1::Usage* usage = f->mutable_usage();
  usage->set_prompt_tokens(static_cast<int32_t>(o.num_prompt_tokens));
  usage->set_completion_tokens(static_cast<int32_t>(o.num_output_tokens));
  usage->set_cached_prompt_tokens(static_cast<int32_t>(o.num_cached_tokens));
  f->mutable_timings()->set_queue_ms(absl::ToDoubleMilliseconds(o.queue_time));
  f->mutable_timings()->set_first_token_ms(absl::ToDoubleMilliseconds(o.first_token_time));
}

}  // namespace tandem
