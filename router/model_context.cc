#include "router/model_context.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/kv_cache/block_hash.h"

namespace tandem::router {

absl::StatusOr<std::unique_ptr<ModelContext>> ModelContext::Load(
    const std::string& dir, int32_t kv_block_size_tokens) {
  auto model = std::make_unique<ModelContext>();
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::Load(dir);
  if (!tokenizer.ok()) return tokenizer.status();
  model->config = *std::move(config);
  model->tokenizer = *std::move(tokenizer);
  model->kv_block_size_tokens = kv_block_size_tokens;
  std::filesystem::path path(dir);
  if (!path.has_filename()) path = path.parent_path();
  model->name = path.filename().string();
  if (model->max_context_tokens() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/config.json: max_position_embeddings must be >= 2"));
  }
  return model;
}

std::vector<uint64_t> FullBlockHashes(std::span<const int32_t> tokens,
                                      int32_t block_size_tokens) {
  std::vector<uint64_t> out;
  BlockHash parent = kRootBlockHash;
  size_t block = static_cast<size_t>(block_size_tokens);
  for (size_t start = 0; start + block <= tokens.size(); start += block) {
    parent = HashBlockTokens(parent, tokens.subspan(start, block));
    out.push_back(parent.lo);
  }
  return out;
}

}  // namespace tandem::router
