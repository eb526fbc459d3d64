// A worker's KV cache as bytes in host or device memory: what transports read and write, and
// what a backend exposes for them. Plain data; the memory belongs to the model runner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/kv_cache/kv_layout.h"

namespace tandem {

// Which memory a KvCacheView's pointers address. Host views are read and written with
// memcpy (TCP, loopback); device views only by GPU transports (NCCL), which refuse host ones.
enum class KvMemory { kHost, kCudaDevice };

// Where a worker's KV bytes live: per layer a K and a V region of
// [num_blocks][block_size][num_kv_heads][head_dim] elements of layout.dtype.
struct KvCacheView {
  KvLayout layout;
  KvMemory memory = KvMemory::kHost;
  int cuda_device = -1;  // the CUDA device ordinal of a kCudaDevice view
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
