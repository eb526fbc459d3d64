// `tandem generate`: one prompt through one in-process model, streamed to an ostream.
//
// Until the engine lands this drives the ModelRunner directly for a single sequence: one
// prefill forward, then one decode forward per token, over a contiguous block table.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sampling/sampling_params.h"

namespace tandem::cli {

struct GenerateOptions {
  std::string model_dir;   // Hugging Face model directory
  std::string prompt;
  SamplingParams sampling;
  int num_threads = 0;     // CPU threads (0: all)
  std::string backend = "cpu";  // model runner: "cpu" or "cuda"
  int device = 0;               // cuda: device ordinal
  std::optional<bool> pipeline_steps;  // EngineOptions::pipeline_steps (unset: the runner's)
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  std::string finish_reason;  // "stop" (EOS) or "length" (max_tokens / context)
  double prefill_ms = 0;
  double decode_ms = 0;
  uint64_t seed = 0;          // the seed used (drawn when the request had none)
};

// Streams the completion's text to `out` as it is generated (never half a UTF-8 character).
absl::StatusOr<GenerateStats> Generate(const GenerateOptions& options, std::ostream& out);

}  // namespace tandem::cli
