// Decides, token by token, whether a sequence is finished, and what text to stream.
//
// One StopChecker per output sequence (per n > 1 sample), owned by the engine next to the
// sequence's SequenceSamplingState. Checks, in order, for the token just appended:
//   1. EOS (every id of the model's eos list, unless ignore_eos) or a stop_token_id:
//      finish "stop"; the token's own text is not streamed.
//   2. stop strings, on the detokenized text across token boundaries (stop_strings.h);
//      text is held back while a partial match is pending: finish "stop".
//   3. max_tokens reached: finish "length"; held-back text is released.
// No stop (1 or 2) fires before min_tokens tokens exist, matching the logits ban.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/sampling/sampling_params.h"
#include "common/sampling/sequence_state.h"
#include "common/tokenizer/incremental_detokenizer.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem {

enum class FinishReason { kStop, kLength };

struct StopVerdict {
  std::string text;                      // newly final text to stream (may be empty)
  std::optional<FinishReason> finish;    // set once the sequence is done
  std::string stop_string;               // the stop string that matched, if any
  std::optional<int32_t> stop_token_id;  // the EOS / stop id that matched, if any
};

class StopChecker {
 public:
  // `tokenizer` outlives the checker; `params` and `eos_token_ids` are copied.
  StopChecker(const Tokenizer& tokenizer, const SamplingParams& params,
              std::span<const int32_t> eos_token_ids, std::span<const int32_t> prompt_ids,
              bool skip_special_tokens = true);

  // Call after AppendToken(state, token); reads state.output_ids and state.held_text.
  StopVerdict Push(SequenceSamplingState& state, int32_t token);

  // The engine ends the sequence for a length reason of its own (the model's context is
  // full): releases the held-back text. finish is kLength, or kStop when the released tail
  // completes a stop string.
  StopVerdict EndForLength(SequenceSamplingState& state);

 private:
  bool IsStopToken(int32_t token) const;
  // Releases held text plus the detokenizer's tail; a stop string may still complete.
  void Finish(SequenceSamplingState& state, StopVerdict& verdict, FinishReason reason);

  IncrementalDetokenizer detokenizer_;
  std::vector<std::string> stop_strings_;
  std::vector<int32_t> stop_token_ids_;  // stop_token_ids plus EOS ids unless ignore_eos
  int32_t min_tokens_;
  int32_t max_tokens_;
  bool include_stop_;
};

}  // namespace tandem
