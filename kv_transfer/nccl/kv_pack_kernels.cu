#include "kv_transfer/nccl/kv_pack_kernels.h"

#include <nccl_device.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"

namespace tandem {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

// A task copies one 16-byte-word slice of one unit's K or V block; task t is (unit
// t / (2 * slices), K or V, slice), one task per CTA (the uncapped copies: thousands of
// small CTAs flood the memory system). kUnroll independent loads are in flight per thread
// before the stores.
template <bool kGather>
__global__ void PackKernel(KvChunkArgs args, int64_t words_per_block, int64_t words_per_slice,
                           int32_t slices) {
  const int64_t num_tasks = static_cast<int64_t>(args.count) * 2 * slices;
  for (int64_t task = blockIdx.x; task < num_tasks; task += gridDim.x) {
    const int64_t in_chunk = task / (2 * slices);
    const bool is_v = (task / slices) % 2 == 1;
    const int64_t slice = task % slices;
    const int64_t unit = args.first_unit + in_chunk;
    const int64_t layer = unit / args.num_blocks;
    const int64_t block = args.block_ids[unit % args.num_blocks];
    uint4* cache = reinterpret_cast<uint4*>(is_v ? args.v_layers[layer] : args.k_layers[layer]) +
                   block * words_per_block;
    uint4* staging = reinterpret_cast<uint4*>(args.staging) +
                     (2 * in_chunk + (is_v ? 1 : 0)) * words_per_block;
    const uint4* __restrict__ src = kGather ? cache : staging;
    uint4* __restrict__ dst = kGather ? staging : cache;
    const int64_t begin = slice * words_per_slice;
    const int64_t end = min(words_per_block, begin + words_per_slice);
    for (int64_t w = begin + threadIdx.x; w < end; w += kThreads * kUnroll) {
      uint4 r[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        int64_t j = w + u * kThreads;
        if (j < end) r[u] = src[j];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        int64_t j = w + u * kThreads;
        if (j < end) dst[j] = r[u];
      }
    }
  }
  if (kGather && args.remote_staging) __threadfence_system();
}

// Capped copies (max_ctas > 0) run beside an NCCL kernel with few CTAs, so each CTA must
// keep much more in flight than PackKernel's 16 KiB: a CTA of kCappedThreads copies a whole
// unit (its K and its V block) per step with 2 * kUnroll independent 16-byte loads per
// thread issued before the stores (64 KiB in flight per CTA at the 8B shape), and loads the
// next unit's block id before copying the current one.
constexpr int kCappedThreads = 512;

template <bool kGather>
__global__ void __launch_bounds__(kCappedThreads)
    CappedPackKernel(KvChunkArgs args, int64_t words_per_block) {
  int64_t in_chunk = blockIdx.x;
  if (in_chunk >= args.count) return;
  int64_t unit = args.first_unit + in_chunk;
  int64_t block = args.block_ids[unit % args.num_blocks];
  while (in_chunk < args.count) {
    const int64_t next_in_chunk = in_chunk + gridDim.x;
    const int64_t next_unit = args.first_unit + next_in_chunk;
    const int64_t next_block =
        next_in_chunk < args.count ? args.block_ids[next_unit % args.num_blocks] : 0;
    const int64_t layer = unit / args.num_blocks;
    uint4* k_cache = reinterpret_cast<uint4*>(args.k_layers[layer]) + block * words_per_block;
    uint4* v_cache = reinterpret_cast<uint4*>(args.v_layers[layer]) + block * words_per_block;
    uint4* k_staging = reinterpret_cast<uint4*>(args.staging) + 2 * in_chunk * words_per_block;
    uint4* v_staging = k_staging + words_per_block;
    const uint4* __restrict__ k_src = kGather ? k_cache : k_staging;
    const uint4* __restrict__ v_src = kGather ? v_cache : v_staging;
    uint4* __restrict__ k_dst = kGather ? k_staging : k_cache;
    uint4* __restrict__ v_dst = kGather ? v_staging : v_cache;
    for (int64_t w = threadIdx.x; w < words_per_block; w += kCappedThreads * kUnroll) {
      uint4 k[kUnroll], v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = w + u * kCappedThreads;
        if (j < words_per_block) {
          k[u] = k_src[j];
          v[u] = v_src[j];
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t j = w + u * kCappedThreads;
        if (j < words_per_block) {
          k_dst[j] = k[u];
          v_dst[j] = v[u];
        }
      }
    }
    in_chunk = next_in_chunk;
    unit = next_unit;
    block = next_block;
  }
  if (kGather && args.remote_staging) __threadfence_system();
}

template <bool kGather>
void LaunchPack(const KvChunkArgs& args, cudaStream_t stream) {
  if (args.count == 0) return;
  if (args.max_ctas > 0) {
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(args.count, args.max_ctas));
    CappedPackKernel<kGather><<<grid, kCappedThreads, 0, stream>>>(
        args, static_cast<int64_t>(args.block_bytes / 16));
    TANDEM_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t words_per_block = static_cast<int64_t>(args.block_bytes / 16);
  // Aim for at least ~512 tasks so the copy fills 132 SMs even for a few blocks.
  int64_t slices = std::clamp<int64_t>(512 / (2 * args.count), 1,
                                       std::max<int64_t>(1, words_per_block / (kThreads * kUnroll)));
  const int64_t words_per_slice = (words_per_block + slices - 1) / slices;
  const int64_t num_tasks = static_cast<int64_t>(args.count) * 2 * slices;
  const int64_t grid = std::min<int64_t>(num_tasks, std::numeric_limits<int32_t>::max());
  PackKernel<kGather><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
      args, words_per_block, words_per_slice, static_cast<int32_t>(slices));
  TANDEM_CUDA_CHECK_LAUNCH();
}

__global__ void WindowPeerPointerKernel(ncclWindow_t window, int peer, void** out) {
  *out = ncclGetPeerPointer(window, 0, peer);
}

__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__global__ void FillPatternKernel(uint64_t* dst, int64_t words, uint64_t seed,
                                  uint64_t first_word) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < words;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = SplitMix64(seed * 0xD1B54A32D192ED03ull + first_word + static_cast<uint64_t>(i));
  }
}

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

absl::Status ValidateKvLayerPointers(const std::vector<std::byte*>& k,
                                     const std::vector<std::byte*>& v, size_t block_bytes) {
  if (block_bytes == 0 || block_bytes % 16 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv pack: block_bytes ", block_bytes, " is not a multiple of 16"));
  }
  if (k.size() != v.size()) return absl::InvalidArgumentError("kv pack: K and V layer counts differ");
  for (size_t l = 0; l < k.size(); ++l) {
    if (k[l] == nullptr || v[l] == nullptr || !Aligned(k[l]) || !Aligned(v[l])) {
      return absl::InvalidArgumentError(
          absl::StrCat("kv pack: layer ", l, " has a null or misaligned (16 bytes) K/V pointer"));
    }
  }
  return absl::OkStatus();
}

absl::Status PreloadKvPackKernels() {
  cudaFuncAttributes attributes;
  for (const void* kernel : {reinterpret_cast<const void*>(&PackKernel<true>),
                             reinterpret_cast<const void*>(&PackKernel<false>),
                             reinterpret_cast<const void*>(&CappedPackKernel<true>),
                             reinterpret_cast<const void*>(&CappedPackKernel<false>),
                             reinterpret_cast<const void*>(&WindowPeerPointerKernel),
                             reinterpret_cast<const void*>(&FillPatternKernel)}) {
    cudaError_t error = cudaFuncGetAttributes(&attributes, kernel);
    if (error != cudaSuccess) {
      return absl::InternalError(
          absl::StrCat("loading the kv pack kernels: ", cudaGetErrorString(error)));
    }
  }
  return absl::OkStatus();
}

void LaunchWindowPeerPointer(ncclWindow_t window, int peer, void** out, cudaStream_t stream) {
  WindowPeerPointerKernel<<<1, 1, 0, stream>>>(window, peer, out);
  TANDEM_CUDA_CHECK_LAUNCH();
}

void LaunchKvGather(const KvChunkArgs& args, cudaStream_t stream) {
  LaunchPack<true>(args, stream);
}

void LaunchKvScatter(const KvChunkArgs& args, cudaStream_t stream) {
  LaunchPack<false>(args, stream);
}

void LaunchFillPattern(std::byte* dst, size_t bytes, uint64_t seed, uint64_t first_word,
                       cudaStream_t stream) {
  const int64_t words = static_cast<int64_t>(bytes / 8);
  if (words == 0) return;
  const int64_t blocks = std::min<int64_t>((words + 255) / 256, 4096);
  FillPatternKernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      reinterpret_cast<uint64_t*>(dst), words, seed, first_word);
  TANDEM_CUDA_CHECK_LAUNCH();
}

}  // namespace tandem
