// Writes a random Llama-shaped model directory (config.json + fp32 model.safetensors) for
// benchmarks, streaming the weights so the writer itself stays small in memory.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace tandem::bench {

struct RandomModelShape {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 2048;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t num_kv_heads = 4;
  int64_t head_dim = 64;
  int64_t max_position_embeddings = 4096;

  int64_t NumParameters() const;  // tied embeddings counted once
};

absl::Status WriteRandomModel(const RandomModelShape& shape, const std::string& dir,
                              uint64_t seed);

}  // namespace tandem::bench
