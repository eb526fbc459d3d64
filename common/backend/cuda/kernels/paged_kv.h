// One layer's paged KV cache on the device, as the kernels see it.
//
// K and V regions are each [num_slots][num_kv_heads][head_dim] bf16, slot = block_id *
// block_size + offset: KvOrdering::kLayerKvBlockTokenHeadDim with dtype BF16.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tandem {

struct PagedKvCache {
  __nv_bfloat16* k = nullptr;
  __nv_bfloat16* v = nullptr;
  int64_t num_slots = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 16;
};

}  // namespace tandem
