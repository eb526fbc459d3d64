#include "kv_transfer/nccl/kv_pack_kernels.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"

namespace tandem {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

// A task copies one 16-byte-word slice of one unit's K or V block; task t is (unit
// t / (2 * slices), K or V, slice). CTAs take tasks blockIdx.x, + gridDim.x, ...: one task
// each when the grid is not capped, several when max_ctas leaves SMs to a concurrent NCCL
// kernel. kUnroll independent loads are in flight per thread before the stores.
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
}

template <bool kGather>
void LaunchPack(const KvChunkArgs& args, cudaStream_t stream) {
  if (args.count == 0) return;
  const int64_t words_per_block = static_cast<int64_t>(args.block_bytes / 16);
  // Aim for at least ~512 tasks so the copy fills 132 SMs even for a few blocks.
  int64_t slices = std::clamp<int64_t>(512 / (2 * args.count), 1,
                                       std::max<int64_t>(1, words_per_block / (kThreads * kUnroll)));
  const int64_t words_per_slice = (words_per_block + slices - 1) / slices;
  const int64_t num_tasks = static_cast<int64_t>(args.count) * 2 * slices;
  int64_t grid = std::min<int64_t>(num_tasks, std::numeric_limits<int32_t>::max());
  if (args.max_ctas > 0) grid = std::min<int64_t>(grid, args.max_ctas);
  PackKernel<kGather><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
      args, words_per_block, words_per_slice, static_cast<int32_t>(slices));
  TANDEM_CUDA_CHECK_LAUNCH();
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
                             reinterpret_cast<const void*>(&FillPatternKernel)}) {
    cudaError_t error = cudaFuncGetAttributes(&attributes, kernel);
    if (error != cudaSuccess) {
      return absl::InternalError(
          absl::StrCat("loading the kv pack kernels: ", cudaGetErrorString(error)));
    }
  }
  return absl::OkStatus();
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
