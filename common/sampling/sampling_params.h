// Per-request sampling parameters (DESIGN.md §7) and their validation.
//
// Plain data: the router validates a request once with Validate(), and every worker that
// runs it (prefill, decode, a migration target) uses the same values. Ranges and defaults
// match protos/tandem/v1/tandem.proto's SamplingParams.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace tandem {

// When beam search stops (Hugging Face's `early_stopping`).
enum class EarlyStopping {
  kHeuristic,  // HF False: stop when no running beam can beat the worst finished one
  kEager,      // HF True: stop as soon as num_beams hypotheses finished
  kNever,      // HF "never": stop only when no beam could ever improve
};

// Caps on request sizes; a request above one gets InvalidArgument naming the field.
inline constexpr int32_t kMaxStopStrings = 16;
inline constexpr int32_t kMaxStopStringBytes = 256;
inline constexpr int32_t kMaxStopTokenIds = 64;
inline constexpr int32_t kMaxLogitBiasEntries = 1024;
inline constexpr int32_t kMaxLogprobs = 20;
inline constexpr int32_t kMaxN = 16;
inline constexpr int32_t kMaxBeams = 16;
inline constexpr int32_t kMaxNoRepeatNgramSize = 64;

struct SamplingParams {
  float temperature = 1.0f;          // >= 0; 0 means greedy
  int32_t top_k = 0;                 // >= 0; 0 disables
  float top_p = 1.0f;                // (0, 1]; 1 disables
  float min_p = 0.0f;                // [0, 1]; 0 disables
  float repetition_penalty = 1.0f;   // > 0; HF semantics over prompt + output; 1 disables
  float presence_penalty = 0.0f;     // [-2, 2]; OpenAI semantics over output
  float frequency_penalty = 0.0f;    // [-2, 2]; OpenAI semantics over output
  int32_t no_repeat_ngram_size = 0;  // [0, 64]; over prompt + output; 0 disables
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias in [-100, 100])
  std::vector<int32_t> bad_token_ids;                 // never generated
  std::vector<int32_t> allowed_token_ids;             // when non-empty, the only ids generated
  int32_t min_tokens = 0;                             // EOS and stop ids banned until this many
  int32_t max_tokens = 16;                            // >= 1
  std::vector<std::string> stop;                      // stop strings (matched on detokenized text)
  std::vector<int32_t> stop_token_ids;                // finish on these ids (besides the EOS ids)
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  std::optional<uint64_t> seed;     // unseeded requests draw one and report it
  std::optional<int32_t> logprobs;  // chosen token's logprob + this many top, [0, 20]
  int32_t n = 1;                    // independent samples, [1, 16]; needs temperature > 0
  int32_t num_beams = 1;            // [1, 16]; > 1 needs temperature 0 and n == 1
  float length_penalty = 1.0f;      // beam score = sum_logprobs / length^length_penalty
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;
  int32_t num_return_sequences = 1;  // beams returned, [1, num_beams]

  // OK, or InvalidArgument naming the field and the allowed range, e.g.
  // "top_p must be in (0, 1], got 1.5". Token ids must lie in [0, vocab_size).
  absl::Status Validate(int64_t vocab_size) const;

  bool greedy() const { return temperature == 0.0f; }
  bool beam_search() const { return num_beams > 1; }
};

}  // namespace tandem
