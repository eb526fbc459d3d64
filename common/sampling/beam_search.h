// Beam search as a pure algorithm the engine drives (Hugging Face `generate(num_beams=...)`
// semantics, transformers 5.x).
//
// The engine owns the model and the KV cache; this object owns only scores and token ids.
// Each step the engine hands in one log-prob row per running beam; Step answers which
// running beam each new beam continues (`parent`) and with which token, so the engine can
// fork KV blocks copy-on-write (several new beams may share a parent; a parent nobody
// continues is freed). Finished hypotheses are kept here.
//
//   BeamSearch search(options);                 // one running beam: the prompt
//   while (!search.done()) {
//     rows = logits of each running beam -> LogSoftmaxInPlace -> ApplyLogitsProcessors
//     std::vector<BeamFork> forks = search.Step(rows, vocab_size);
//     fork KV: new beam i = copy of running beam forks[i].parent + forks[i].token_id
//   }
//   search.Results();                            // best first
//
// Semantics (docs/sampling.md): each step keeps the best K = max(2, 1 + num_eos) *
// num_beams continuations over all beams by summed log-prob; a continuation ending in an
// EOS id (or reaching max_new_tokens) finishes if it ranks in the top num_beams, scored
// sum_logprobs / generated_length^length_penalty (the EOS token counts in the length); the
// best num_beams unfinished ones run on. early_stopping: kEager stops once num_beams
// hypotheses finished; kHeuristic stops when the best running beam, scored at its current
// length, cannot beat the worst finished one; kNever does the same with the length at
// max_new_tokens when length_penalty > 0.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/sampling/sampling_params.h"

namespace tandem {

struct BeamSearchOptions {
  int32_t num_beams = 4;
  float length_penalty = 1.0f;
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;
  int32_t max_new_tokens = 16;
  std::vector<int32_t> eos_token_ids;  // a continuation with one of these finishes
  int32_t num_return_sequences = 1;
};

// New running beam i continues running beam `parent` with `token_id`.
struct BeamFork {
  int32_t parent = 0;
  int32_t token_id = 0;
};

struct BeamHypothesis {
  std::vector<int32_t> token_ids;  // generated tokens (ending in the EOS id if one finished it)
  float sum_logprobs = 0.0f;
  float score = 0.0f;  // sum_logprobs / token_ids.size()^length_penalty
};

class BeamSearch {
 public:
  explicit BeamSearch(BeamSearchOptions options);

  // 1 before the first step (the prompt), num_beams after.
  int32_t num_running() const { return static_cast<int32_t>(running_.size()); }
  // Generated tokens of running beam `beam`.
  const std::vector<int32_t>& running_tokens(int32_t beam) const { return running_[beam].tokens; }
  bool done() const { return done_; }

  // `logprobs`: [num_running()][vocab_size] processed log-probs. Returns the new running
  // beams ([num_beams], empty once the search is done).
  std::vector<BeamFork> Step(std::span<const float> logprobs, int64_t vocab_size);

  // Finished hypotheses so far, best first (at most num_beams).
  const std::vector<BeamHypothesis>& finished() const { return finished_; }
  // The best num_return_sequences hypotheses; call once done().
  std::vector<BeamHypothesis> Results() const;

 private:
  struct Beam {
    std::vector<int32_t> tokens;
    float sum_logprobs = 0.0f;
  };
  struct Candidate {
    float sum_logprobs;
    int32_t parent;
    int32_t token_id;
    bool hits_stop;  // ends in an EOS id or reaches max_new_tokens
  };

  std::vector<Candidate> TopCandidates(std::span<const float> logprobs, int64_t vocab_size) const;
  void AddFinished(const std::vector<Candidate>& candidates, int32_t length);
  void AddHypothesis(BeamHypothesis hypothesis);
  bool finished_full() const {
    return static_cast<int32_t>(finished_.size()) == options_.num_beams;
  }
  void UpdateHeuristic();
  bool IsEos(int32_t token) const;

  BeamSearchOptions options_;
  std::vector<Beam> running_;             // sorted by sum_logprobs, best first
  std::vector<BeamHypothesis> finished_;  // sorted by score, best first
  int32_t num_generated_ = 0;
  bool improvement_possible_ = true;  // HF's is_early_stop_heuristic_unsatisfied
  bool done_ = false;
};

}  // namespace tandem
