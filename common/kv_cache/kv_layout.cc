#include "common/kv_cache/kv_layout.h"

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

std::string_view OrderingName(KvOrdering ordering) {
  switch (ordering) {
    case KvOrdering::kLayerKvBlockTokenHeadDim:
      return "LKBTHD";
  }
  return "?";
}

}  // namespace

absl::Status KvLayout::Validate() const {
  if (block_size_tokens < 1 || block_size_tokens > 256 ||
      (block_size_tokens & (block_size_tokens - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "block_size_tokens must be a power of two in [1, 256], got ", block_size_tokens));
  }
  if (num_layers <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("num_layers must be > 0, got ", num_layers));
  }
  if (head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim must be > 0, got ", head_dim));
  }
  if (num_kv_heads <= 0 || kv_head_begin < 0 || kv_head_begin + num_kv_heads > total_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv head range [", kv_head_begin, ", ", kv_head_begin + num_kv_heads,
        ") must be non-empty and inside [0, ", total_kv_heads, ")"));
  }
  return absl::OkStatus();
}

std::string KvLayout::Describe() const {
  return absl::StrCat(std::string(DTypeName(dtype)), "/b", block_size_tokens, "/L", num_layers, "/kv",
                      kv_head_begin, "+", num_kv_heads, "of", total_kv_heads, "/d", head_dim,
                      "/", std::string(OrderingName(ordering)));
}

}  // namespace tandem
