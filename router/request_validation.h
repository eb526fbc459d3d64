// Validation of a public GenerateRequest at the router's door (DESIGN.md §8): every field
// is checked, text prompts are tokenized, and the seed is resolved, so workers receive a
// request they can run as is. Errors are InvalidArgument naming the field with its path,
// e.g. "sampling.top_p must be in (0, 1], got 1.5". Pure; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sampling/sampling_params.h"
#include "router/model_context.h"
#include "tandem/v1/tandem.pb.h"

namespace tandem::router {

inline constexpr size_t kMaxRequestIdBytes = 128;

struct PreparedRequest {
  std::string request_id;
  std::vector<int32_t> prompt_ids;  // [num_prompt_tokens], each in [0, vocab_size)
  SamplingParams params;            // validated; params.seed is always set
  bool skip_special_tokens = true;

  uint64_t seed() const { return *params.seed; }
  // Outputs the client receives: n samples, or num_return_sequences beams.
  int32_t num_outputs() const {
    return params.beam_search() ? params.num_return_sequences : params.n;
  }
};

// `assigned_id` replaces an empty request_id; `random_seed` is used when none is given.
absl::StatusOr<PreparedRequest> PrepareRequest(const v1::GenerateRequest& request,
                                               const ModelContext& model,
                                               std::string_view assigned_id,
                                               uint64_t random_seed);

// request_id: at most 128 bytes of [A-Za-z0-9._:-] (empty is allowed: the router assigns).
absl::Status ValidateRequestId(std::string_view request_id);

// Token ids of a Tokenize/Generate text; InvalidArgument naming `field` on bad UTF-8.
absl::StatusOr<std::vector<int32_t>> TokenizeText(const ModelContext& model,
                                                  std::string_view field,
                                                  std::string_view text,
                                                  bool add_special_tokens);

}  // namespace tandem::router
