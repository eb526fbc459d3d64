#include "common/sampling/beam_search.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "common/logging.h"

namespace tandem {
namespace {

float LengthNormalized(float sum_logprobs, int32_t length, float length_penalty) {
  // fp32 score over an fp64 divisor, as Hugging Face computes it.
  return static_cast<float>(sum_logprobs / std::pow(static_cast<double>(length), length_penalty));
}

}  // namespace

BeamSearch::BeamSearch(BeamSearchOptions options) : options_(std::move(options)) {
  TANDEM_CHECK(options_.num_beams >= 1 && options_.max_new_tokens >= 1);
  TANDEM_CHECK(options_.num_return_sequences >= 1 &&
               options_.num_return_sequences <= options_.num_beams);
  running_.push_back(Beam{});
}

bool BeamSearch::IsEos(int32_t token) const {
  return std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(), token) !=
         options_.eos_token_ids.end();
}

// The best K continuations over all running beams, best first (ties: lower beam, lower id).
std::vector<BeamSearch::Candidate> BeamSearch::TopCandidates(std::span<const float> logprobs,
                                                             int64_t vocab_size) const {
  const int32_t num_eos = static_cast<int32_t>(options_.eos_token_ids.size());
  const size_t k =
      std::min<size_t>(std::max(2, 1 + num_eos) * options_.num_beams, running_.size() * vocab_size);
  std::vector<Candidate> all;
  std::vector<int32_t> ids(vocab_size);
  for (size_t b = 0; b < running_.size(); ++b) {
    std::span<const float> row = logprobs.subspan(b * vocab_size, vocab_size);
    for (int64_t i = 0; i < vocab_size; ++i) ids[i] = static_cast<int32_t>(i);
    size_t row_k = std::min<size_t>(k, vocab_size);  // no more than k can come from one row
    std::nth_element(ids.begin(), ids.begin() + (row_k - 1), ids.end(), [&](int32_t a, int32_t c) {
      return row[a] != row[c] ? row[a] > row[c] : a < c;
    });
    for (size_t i = 0; i < row_k; ++i) {
      all.push_back(
          {running_[b].sum_logprobs + row[ids[i]], static_cast<int32_t>(b), ids[i], false});
    }
  }
  std::partial_sort(all.begin(), all.begin() + k, all.end(),
                    [](const Candidate& a, const Candidate& c) {
                      if (a.sum_logprobs != c.sum_logprobs) return a.sum_logprobs > c.sum_logprobs;
                      return a.parent != c.parent ? a.parent < c.parent : a.token_id < c.token_id;
                    });
  all.resize(k);
  const bool at_max_length = num_generated_ + 1 >= options_.max_new_tokens;
  for (Candidate& c : all) c.hits_stop = at_max_length || IsEos(c.token_id);
  return all;
}

void BeamSearch::AddHypothesis(BeamHypothesis hypothesis) {
  auto at = std::upper_bound(finished_.begin(), finished_.end(), hypothesis.score,
                             [](float score, const BeamHypothesis& h) { return score > h.score; });
  finished_.insert(at, std::move(hypothesis));
  if (static_cast<int32_t>(finished_.size()) > options_.num_beams) finished_.pop_back();
}

// Only the top num_beams candidates may finish, and only while the search can still improve
// (and, for kEager, until num_beams hypotheses exist), as in Hugging Face.
void BeamSearch::AddFinished(const std::vector<Candidate>& candidates, int32_t length) {
  if (!improvement_possible_) return;
  if (options_.early_stopping == EarlyStopping::kEager && finished_full()) return;
  size_t limit = std::min<size_t>(options_.num_beams, candidates.size());
  for (size_t i = 0; i < limit; ++i) {
    const Candidate& c = candidates[i];
    if (!c.hits_stop) continue;
    BeamHypothesis h{.token_ids = running_[c.parent].tokens, .sum_logprobs = c.sum_logprobs};
    h.token_ids.push_back(c.token_id);
    h.score = LengthNormalized(c.sum_logprobs, length, options_.length_penalty);
    AddHypothesis(std::move(h));
  }
}

void BeamSearch::UpdateHeuristic() {
  if (!finished_full() || running_.empty()) return;
  int32_t best_length = num_generated_;
  if (options_.early_stopping == EarlyStopping::kNever && options_.length_penalty > 0.0f) {
    best_length = options_.max_new_tokens;
  }
  float best_possible =
      LengthNormalized(running_.front().sum_logprobs, best_length, options_.length_penalty);
  improvement_possible_ = improvement_possible_ && best_possible > finished_.back().score;
}

std::vector<BeamFork> BeamSearch::Step(std::span<const float> logprobs, int64_t vocab_size) {
  TANDEM_CHECK(!done_) << "Step after the beam search finished";
  TANDEM_CHECK(logprobs.size() == running_.size() * static_cast<size_t>(vocab_size));
  std::vector<Candidate> candidates = TopCandidates(logprobs, vocab_size);
  AddFinished(candidates, num_generated_ + 1);
  std::vector<BeamFork> forks;
  std::vector<Beam> next;
  for (const Candidate& c : candidates) {
    if (c.hits_stop || static_cast<int32_t>(next.size()) == options_.num_beams) continue;
    forks.push_back({c.parent, c.token_id});
    next.push_back(Beam{running_[c.parent].tokens, c.sum_logprobs});
    next.back().tokens.push_back(c.token_id);
  }
  running_ = std::move(next);
  ++num_generated_;
  UpdateHeuristic();
  bool all_stopped = std::all_of(candidates.begin(), candidates.end(),
                                 [](const Candidate& c) { return c.hits_stop; });
  done_ = !improvement_possible_ || all_stopped ||
          (options_.early_stopping == EarlyStopping::kEager && finished_full());
  if (done_) forks.clear();
  return forks;
}

std::vector<BeamHypothesis> BeamSearch::Results() const {
  size_t n = std::min<size_t>(options_.num_return_sequences, finished_.size());
  return {finished_.begin(), finished_.begin() + n};
}

}  // namespace tandem
