// What the router knows about the model it serves: tokenizer, config and the workers' KV
// block size. Immutable after Load; shared by every request thread.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/model_config.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem::router {

struct ModelContext {
  std::string name;  // the model directory's base name
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  int32_t kv_block_size_tokens = 16;

  int64_t vocab_size() const { return config.vocab_size; }
  int64_t max_context_tokens() const { return config.max_position_embeddings; }

  // Reads `dir`/config.json (+ generation_config.json) and `dir`/tokenizer.json.
  static absl::StatusOr<std::unique_ptr<ModelContext>> Load(const std::string& dir,
                                                            int32_t kv_block_size_tokens);
};

// Low 64 bits of the chained hashes of the full blocks of `tokens`, chained from
// kRootBlockHash exactly as the workers' block managers do (common/kv_cache/block_hash.h),
// so they compare with LoadReport.cached_block_hashes.
std::vector<uint64_t> FullBlockHashes(std::span<const int32_t> tokens,
                                      int32_t block_size_tokens);

}  // namespace tandem::router
