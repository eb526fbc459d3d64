// Gather and scatter of one chunk (kv_chunk_plan.h) of a request's KV blocks for the NCCL
// transport.
//
// A chunk is `count` consecutive units from `first_unit` of the request's layer-major
// (layer, block) units; it may span layers. Its staging form is, per unit in order, the K
// block then the V block, each `block_bytes` contiguous bytes (the layout's
// BytesPerBlockPerLayer under KvOrdering::kLayerKvBlockTokenHeadDim). The gather packs a
// chunk into staging on the sender; the scatter writes staging into the receiver's
// reserved blocks. One launch per chunk, whatever the layers it spans. Both copy 16-byte
// words: block_bytes must be a multiple of 16 and every pointer 16-byte aligned
// (ValidateKvLayerPointers at setup).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace tandem {

struct KvChunkArgs {
  std::byte* const* k_layers = nullptr;  // device array [num_layers] of K regions
  std::byte* const* v_layers = nullptr;  // device array [num_layers] of V regions
  const int32_t* block_ids = nullptr;    // device [num_blocks]: the request's blocks
  int32_t num_blocks = 0;                // blocks per layer in the request
  int64_t first_unit = 0;
  int32_t count = 0;                     // units in the chunk
  size_t block_bytes = 0;
  std::byte* staging = nullptr;          // device, 2 * count * block_bytes
  // At most this many CTAs, each looping over units with a whole unit in flight (0: one
  // small CTA per 16-byte-word slice of a block, thousands for a big chunk), so a copy
  // running beside an NCCL kernel leaves it SMs and memory bandwidth.
  int32_t max_ctas = 0;
  // Gathers only: `staging` is another GPU's memory (a peer mapping, direct writes). Each
  // thread ends with a system-scope fence, so the bytes are in the peer's memory once the
  // kernel has completed.
  bool remote_staging = false;
};

// Every layer pointer non-null and 16-byte aligned, block_bytes a non-zero multiple of 16.
absl::Status ValidateKvLayerPointers(const std::vector<std::byte*>& k,
                                     const std::vector<std::byte*>& v, size_t block_bytes);

// Loads the kernels below into the current device's context now. With CUDA lazy loading a
// kernel's first launch may wait for the whole context to go idle, which never happens
// while an ncclRecv waits for a frozen peer: call this before any communicator exists.
absl::Status PreloadKvPackKernels();

// staging <- the chunk's (K, V) blocks. Asynchronous on `stream`.
void LaunchKvGather(const KvChunkArgs& args, cudaStream_t stream);
// The chunk's (K, V) blocks <- staging. Asynchronous on `stream`.
void LaunchKvScatter(const KvChunkArgs& args, cudaStream_t stream);

// *out (device memory) <- the address, in this process, of rank `peer`'s buffer of the
// symmetric NCCL window `window` (ncclGetPeerPointer). Asynchronous on `stream`.
void LaunchWindowPeerPointer(ncclWindow_t window, int peer, void** out, cudaStream_t stream);

// Tests and benchmarks: fills `bytes` (a multiple of 8) with a pseudo-random pattern whose
// 8-byte word i is a hash of (seed, first_word + i), so any process can recompute any part.
void LaunchFillPattern(std::byte* dst, size_t bytes, uint64_t seed, uint64_t first_word,
                       cudaStream_t stream);

}  // namespace tandem
