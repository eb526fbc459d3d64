#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/rope_kv_write.h"

namespace tandem {
namespace {

constexpr int kThreads = 128;

// One block per token: rotates the q and k heads pairwise (i, i + D/2), copies v. The
// D/2 angles of the token are computed once into shared memory (every head shares them).
// kVec8: half-dims, rows and pointers allow 16-byte accesses (8 bf16 per load).
template <bool kVec8>
__global__ void __launch_bounds__(kThreads) RopeKvWriteKernel(RopeKvWriteArgs args) {
  extern __shared__ float angles[];  // [half] cos, then [half] sin
  cuda_kernels::AllowNextGrid();
  cuda_kernels::WaitForPreviousGrid();
  const int64_t t = blockIdx.x;
  const int heads = args.num_heads, kv_heads = args.cache.num_kv_heads;
  const int dim = args.cache.head_dim, half = dim / 2;
  const float position = static_cast<float>(args.positions[t]);
  for (int i = threadIdx.x; i < half; i += kThreads) {
    sincosf(position * args.inv_freq[i], &angles[half + i], &angles[i]);
  }
  const int64_t slot = args.slot_mapping[t];
  const bool write_kv = slot >= 0 && slot < args.cache.num_slots;
  const __nv_bfloat16* row = args.qkv + t * static_cast<int64_t>(heads + 2 * kv_heads) * dim;
  const int64_t kv_row = slot * kv_heads * dim;
  __syncthreads();
  constexpr int kWidth = kVec8 ? 8 : 1;
  const int groups = half / kWidth;  // per head
  for (int item = threadIdx.x; item < (heads + kv_heads) * groups; item += kThreads) {
    const int h = item / groups, i = (item % groups) * kWidth;
    if (h >= heads && !write_kv) break;  // k heads come last
    __nv_bfloat16* out = h < heads ? args.q_out + (t * heads + h) * dim
                                   : args.cache.k + kv_row + (h - heads) * dim;
    float a[kWidth], b[kWidth], first[kWidth], second[kWidth];
    if constexpr (kVec8) {
      cuda_kernels::LoadBf16x8(row + h * dim + i, a);
      cuda_kernels::LoadBf16x8(row + h * dim + i + half, b);
    } else {
      a[0] = __bfloat162float(row[h * dim + i]);
      b[0] = __bfloat162float(row[h * dim + i + half]);
    }
#pragma unroll
    for (int e = 0; e < kWidth; ++e) {
      cuda_kernels::RopeRotate(a[e], b[e], angles[i + e], angles[half + i + e], first[e],
                               second[e]);
    }
    if constexpr (kVec8) {
      cuda_kernels::StoreBf16x8(out + i, first);
      cuda_kernels::StoreBf16x8(out + i + half, second);
    } else {
      out[i] = __float2bfloat16(first[0]);
      out[i + half] = __float2bfloat16(second[0]);
    }
  }
  if (!write_kv) return;
  const __nv_bfloat16* v = row + (heads + kv_heads) * dim;
  if constexpr (kVec8) {
    const uint4* v4 = reinterpret_cast<const uint4*>(v);
    uint4* dst4 = reinterpret_cast<uint4*>(args.cache.v + kv_row);
    for (int i = threadIdx.x; i < kv_heads * dim / 8; i += kThreads) dst4[i] = v4[i];
  } else {
    for (int i = threadIdx.x; i < kv_heads * dim; i += kThreads) args.cache.v[kv_row + i] = v[i];
  }
}

// grid (num_copies, num_regions): one block copies one KV block of one region.
__global__ void __launch_bounds__(kThreads) CopyKvBlocksKernel(CopyKvBlocksArgs args) {
  const int64_t src = args.pairs[2 * blockIdx.x], dst = args.pairs[2 * blockIdx.x + 1];
  __nv_bfloat16* region = args.cache + static_cast<int64_t>(blockIdx.y) * args.region_elements;
  const __nv_bfloat16* from = region + src * args.block_elements;
  __nv_bfloat16* to = region + dst * args.block_elements;
  if (args.block_elements % 8 == 0) {
    const uint4* from4 = reinterpret_cast<const uint4*>(from);
    uint4* to4 = reinterpret_cast<uint4*>(to);
    for (int64_t i = threadIdx.x; i < args.block_elements / 8; i += kThreads) to4[i] = from4[i];
  } else {
    for (int64_t i = threadIdx.x; i < args.block_elements; i += kThreads) to[i] = from[i];
  }
}

}  // namespace

absl::Status LaunchCopyKvBlocks(const CopyKvBlocksArgs& args, cudaStream_t stream) {
  if (args.num_copies < 0 || args.num_regions <= 0 || args.block_elements <= 0 ||
      args.region_elements < args.block_elements || args.num_regions > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "copy_kv_blocks: bad shape: copies ", args.num_copies, ", regions ", args.num_regions,
        ", region ", args.region_elements, ", block ", args.block_elements));
  }
  if (args.num_copies == 0) return absl::OkStatus();
  if (args.cache == nullptr || args.pairs == nullptr) {
    return absl::InvalidArgumentError("copy_kv_blocks: null pointer");
  }
  CopyKvBlocksKernel<<<dim3(static_cast<unsigned>(args.num_copies),
                            static_cast<unsigned>(args.num_regions)),
                       kThreads, 0, stream>>>(args);
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status LaunchRopeKvWrite(const RopeKvWriteArgs& args, cudaStream_t stream) {
  const PagedKvCache& c = args.cache;
  if (args.num_tokens < 0 || args.num_heads <= 0 || c.num_kv_heads <= 0 || c.head_dim <= 0 ||
      c.head_dim % 2 != 0 || c.head_dim > 4096 || args.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope_kv_write: need num_tokens >= 0, num_heads a positive multiple of num_kv_heads, "
        "even head_dim <= 4096; got ", args.num_tokens, ", ", args.num_heads, ", ", c.num_kv_heads,
        ", ", c.head_dim));
  }
  if (args.num_tokens == 0) return absl::OkStatus();
  if (args.qkv == nullptr || args.q_out == nullptr || args.positions == nullptr ||
      args.slot_mapping == nullptr || args.inv_freq == nullptr || c.k == nullptr ||
      c.v == nullptr) {
    return absl::InvalidArgumentError("rope_kv_write: null pointer");
  }
  const bool vec8 = (c.head_dim / 2) % 8 == 0 && cuda_kernels::Aligned16(args.qkv) &&
                    cuda_kernels::Aligned16(args.q_out) && cuda_kernels::Aligned16(c.k) &&
                    cuda_kernels::Aligned16(c.v);
  const size_t shared = sizeof(float) * c.head_dim;  // cos and sin of the D/2 angles
  TANDEM_CUDA_CHECK(cuda_kernels::LaunchDependentShared(
      vec8 ? RopeKvWriteKernel<true> : RopeKvWriteKernel<false>,
      dim3(static_cast<unsigned>(args.num_tokens)), dim3(kThreads), shared, stream, args));
  return absl::OkStatus();
}

}  // namespace tandem
