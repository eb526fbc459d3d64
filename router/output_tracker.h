// Migration bookkeeping: what the client has already received, per output index, so that
// a request re-issued to another worker pair shows the client no duplicate and no missing
// token.
//
// Two ways to re-issue (docs/router.md):
//  - continue (n == 1, no beams): the new pair gets generated_token_ids = tokens(0) and
//    streams only what follows; nothing needs trimming.
//  - replay (n > 1 or beams): the new pair reruns from the first token; seeded sampling
//    makes each output identical, so the tracker trims the tokens and text bytes the
//    client already has and drops Finished events of outputs already finished.
// Not thread-safe: the owning request serializes calls under its mutex.
#pragma once

#include <cstdint>
#include <vector>

#include "tandem/v1/tandem.pb.h"

namespace tandem::router {

class OutputTracker {
 public:
  explicit OutputTracker(int32_t num_outputs) : outputs_(static_cast<size_t>(num_outputs)) {}

  // A new attempt starts; with `replay`, its outputs start over from the first token.
  void BeginAttempt(bool replay);
  // Trims `delta` to what the client has not seen; false when nothing is left to relay
  // (or the index is unknown or already finished).
  bool Accept(v1::Delta& delta);
  // False when `index` is unknown or already finished (a replayed duplicate).
  bool AcceptFinished(int32_t index);

  bool AllFinished() const;
  bool AnyRelayed() const;
  int32_t num_outputs() const { return static_cast<int32_t>(outputs_.size()); }
  const std::vector<int32_t>& tokens(int32_t index) const {
    return outputs_[static_cast<size_t>(index)].tokens;
  }
  bool finished(int32_t index) const { return outputs_[static_cast<size_t>(index)].finished; }
  int64_t total_tokens() const;

 private:
  struct Output {
    std::vector<int32_t> tokens;  // relayed token ids, in order
    size_t text_bytes = 0;        // relayed text bytes
    bool finished = false;
    size_t skip_tokens = 0;       // replay: tokens still to trim
    size_t skip_bytes = 0;        // replay: text bytes still to trim
  };
  Output* Find(int32_t index);

  std::vector<Output> outputs_;
};

}  // namespace tandem::router
