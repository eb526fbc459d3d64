// Stop strings matched on streamed text, across token boundaries.
//
// Plain text in, text out: the caller feeds each newly detokenized piece; the matcher
// releases the text that can no longer be part of a stop string and holds back the longest
// tail that is still a prefix of one (SequenceSamplingState::held_text). A match ends the
// stream at its earliest occurrence; the stop string itself is dropped unless
// `include_stop` (vLLM's include_stop_str_in_output).
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace tandem {

struct StopStringMatch {
  std::string released;  // text that became final (stop string cut off unless included)
  bool matched = false;
  std::string stop;  // the stop string that matched
};

// Appends `new_text` to `held_text`, then releases what is safe. On a match, everything
// after the stop string is discarded and `held_text` is left empty.
StopStringMatch MatchStopStrings(std::string& held_text, std::span<const std::string> stops,
                                 std::string_view new_text, bool include_stop);

}  // namespace tandem
