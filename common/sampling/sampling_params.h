// Per-request sampling parameters and their validation.
//
// This is the first slice of the sampler stack (DESIGN.md §7): temperature, top-k, top-p,
// seed and max_tokens. Penalties, min-p, stop strings, logprobs, n and beams extend it.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"

namespace tandem {

struct SamplingParams {
  float temperature = 1.0f;  // 0 means greedy
  int32_t top_k = 0;         // 0 means no top-k cut
  float top_p = 1.0f;        // (0, 1]; 1 means no nucleus cut
  std::optional<uint64_t> seed;  // unseeded requests draw one and report it
  int32_t max_tokens = 16;
  bool ignore_eos = false;

  // InvalidArgument naming the field and the allowed range, e.g.
  // "top_p must be in (0, 1], got 1.5".
  absl::Status Validate() const;
  bool greedy() const { return temperature == 0.0f; }
};

}  // namespace tandem
