// Gather and scatter of one layer's KV blocks for the NCCL transport.
//
// A chunk is `count` blocks of one layer; its staging form is [count K blocks][count V
// blocks], each block `block_bytes` contiguous bytes (the layout's BytesPerBlockPerLayer
// under KvOrdering::kLayerKvBlockTokenHeadDim). The gather packs a request's blocks into the
// staging buffer on the sender; the scatter writes staging into the receiver's reserved
// blocks. Both copy 16-byte words: block_bytes must be a multiple of 16 and every pointer
// 16-byte aligned (ValidateKvPackArgs).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace tandem {

struct KvPackArgs {
  std::byte* k = nullptr;            // the layer's K region (device)
  std::byte* v = nullptr;            // the layer's V region (device)
  const int32_t* block_ids = nullptr;  // device, `count` ids into the regions
  int32_t count = 0;
  size_t block_bytes = 0;
  std::byte* staging = nullptr;      // device, 2 * count * block_bytes
};

absl::Status ValidateKvPackArgs(const KvPackArgs& args);

// staging <- (K blocks, V blocks). Asynchronous on `stream`.
void LaunchKvGather(const KvPackArgs& args, cudaStream_t stream);
// (K blocks, V blocks) <- staging. Asynchronous on `stream`.
void LaunchKvScatter(const KvPackArgs& args, cudaStream_t stream);

// Tests and benchmarks: fills `bytes` (a multiple of 8) with a pseudo-random pattern whose
// 8-byte word i is a hash of (seed, first_word + i), so any process can recompute any part.
void LaunchFillPattern(std::byte* dst, size_t bytes, uint64_t seed, uint64_t first_word,
                       cudaStream_t stream);

}  // namespace tandem
