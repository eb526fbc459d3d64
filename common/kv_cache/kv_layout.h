// The byte layout of a worker's paged KV cache.
//
// Both sides of a KV transfer hash the layout together with the model identity and refuse
// a mismatched peer. The layout carries the kv-head range a worker holds, so tensor
// parallelism later splits heads without reshaping runners or transfers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/model/dtype.h"

namespace tandem {

// How one layer's cache is ordered in memory. Closed set: a new ordering breaks every
// switch that must handle it.
enum class KvOrdering {
  // Per layer: a K region then a V region, each [num_blocks][block_size][num_kv_heads][head_dim].
  kLayerKvBlockTokenHeadDim,
};

struct KvLayout {
  DType dtype = DType::kF32;
  int64_t block_size_tokens = 16;
  int64_t num_layers = 0;
  int64_t total_kv_heads = 0;  // heads of the whole model
  int64_t kv_head_begin = 0;   // first kv head this worker holds
  int64_t num_kv_heads = 0;    // kv heads this worker holds
  int64_t head_dim = 0;
  KvOrdering ordering = KvOrdering::kLayerKvBlockTokenHeadDim;

  // Elements of one token's K (or V) in one layer: num_kv_heads * head_dim.
  int64_t ElementsPerTokenPerLayer() const { return num_kv_heads * head_dim; }
  // Bytes of one block's K (or V) in one layer.
  size_t BytesPerBlockPerLayer() const {
    return static_cast<size_t>(block_size_tokens * ElementsPerTokenPerLayer()) *
           DTypeSize(dtype);
  }
  // Bytes of one block across all layers, K and V.
  size_t kv_bytes_per_block() const {
    return 2 * static_cast<size_t>(num_layers) * BytesPerBlockPerLayer();
  }

  // Checks ranges: block size one of 16/32/64... (any power of two in [1, 256]), positive
  // dims, head range inside the model.
  absl::Status Validate() const;

  // A stable text form, e.g. "f32/b16/L4/kv0+2of2/d32/LKBTHD", hashed with the model
  // identity for the transfer handshake.
  std::string Describe() const;

  bool operator==(const KvLayout&) const = default;
};

}  // namespace tandem
