// Fused rotary embedding (Hugging Face rotate_half, inverse frequencies precomputed on the
// host with any rope_scaling, llama3 included) + KV-cache write through the slot mapping.
//
// qkv: [num_tokens][(num_heads + 2 * num_kv_heads) * head_dim] bf16, the fused QKV GEMM's
// output (q heads, then k heads, then v heads). Writes the rotated q to q_out
// ([num_tokens][num_heads][head_dim]), the rotated k and the plain v into the cache at
// slot_mapping[t]; a negative slot writes no KV (padding rows). Angles are fp32
// position * inv_freq with accurate sincosf. Reference: reference::ApplyRope +
// reference::WriteKv.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/backend/cuda/kernels/paged_kv.h"

namespace tandem {

struct RopeKvWriteArgs {
  const __nv_bfloat16* qkv = nullptr;   // [num_tokens][(H + 2 KV) * D]
  __nv_bfloat16* q_out = nullptr;       // [num_tokens][H][D]
  const int32_t* positions = nullptr;   // [num_tokens]
  const int32_t* slot_mapping = nullptr;  // [num_tokens]
  const float* inv_freq = nullptr;      // [D / 2]
  int64_t num_tokens = 0;
  int32_t num_heads = 0;
  PagedKvCache cache;                   // num_kv_heads, head_dim, num_slots
};

absl::Status LaunchRopeKvWrite(const RopeKvWriteArgs& args, cudaStream_t stream);

// Copy-on-write forks: for each (src, dst) block pair, every region's block `src` is copied
// to block `dst`. The cache is num_regions regions (layers x K|V) of region_elements bf16
// each; a block is block_elements consecutive elements of a region. Destinations must be
// distinct and no destination may be a source of the same call.
struct CopyKvBlocksArgs {
  __nv_bfloat16* cache = nullptr;
  int64_t num_regions = 0;
  int64_t region_elements = 0;
  int64_t block_elements = 0;
  const int32_t* pairs = nullptr;  // [num_copies][2] (src, dst) block ids, on the device
  int32_t num_copies = 0;
};

absl::Status LaunchCopyKvBlocks(const CopyKvBlocksArgs& args, cudaStream_t stream);

}  // namespace tandem
