// A worker's KV cache as bytes in host memory: what transports read and write, and what a
// backend exposes for them. Plain data; the memory belongs to the model runner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/kv_cache/kv_layout.h"

namespace tandem {

// Where a worker's KV bytes live in host memory: per layer a K and a V region of
// [num_blocks][block_size][num_kv_heads][head_dim] elements of layout.dtype.
struct KvCacheView {
  KvLayout layout;
  int64_t num_blocks = 0;
  std::vector<std::byte*> k;  // [num_layers] base of each layer's K region
  std::vector<std::byte*> v;  // [num_layers]

  std::byte* KBlock(int64_t layer, int64_t block) const {
    return k[layer] + block * layout.BytesPerBlockPerLayer();
  }
  std::byte* VBlock(int64_t layer, int64_t block) const {
    return v[layer] + block * layout.BytesPerBlockPerLayer();
  }
};

}  // namespace tandem
