#include "common/sampling/sequence_state.h"

#include "common/sampling/selection.h"

namespace tandem {

SequenceSamplingState MakeSequenceState(std::span<const int32_t> prompt_ids, uint64_t seed) {
  SequenceSamplingState state;
  state.seed = seed;
  state.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  state.prompt_token_set.insert(prompt_ids.begin(), prompt_ids.end());
  return state;
}

void AppendToken(SequenceSamplingState& state, int32_t token) {
  state.output_ids.push_back(token);
  ++state.output_token_counts[token];
}

std::vector<SequenceSamplingState> MakeSampleStates(std::span<const int32_t> prompt_ids,
                                                    uint64_t seed, int32_t n) {
  std::vector<SequenceSamplingState> states(n, MakeSequenceState(prompt_ids, seed));
  for (int32_t i = 0; i < n; ++i) states[i].seed = SampleSeed(seed, i);
  return states;
}

}  // namespace tandem
