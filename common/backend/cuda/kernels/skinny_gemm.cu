#include <cooperative_groups.h>
#include <cuda.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/mma.cuh"
#include "common/backend/cuda/kernels/skinny_gemm.h"
#include "common/backend/cuda/kernels/tensor_map.h"
#include "common/status.h"

namespace tandem {
namespace {

using cuda_kernels::MmaBf16;

constexpr int kDepth = 8;        // 32-wide k-steps of weights in flight per lane
constexpr int kMaxSplits = 8;    // the portable cluster size
constexpr int kStepElements = 32;

// [columns][rows + 4] fp32 partial sums of a block: the accumulator stores (8 rows of one
// column per quad, 4 columns 8 apart per lane group) and the epilogue's float4 reads along
// rows are both free of bank conflicts.
template <int kRows>
constexpr int kPartialStride = kRows + 4;

// Shared memory: each warp's weight ring ([warp][depth][m-tile][half][lane], 16 bytes each:
// a lane copies exactly the bytes it reads back), then the block's activations for kDepth + 1
// k-steps ([slot][8 * kNTiles rows][32]); the partial sums alias both after the loop.
template <int kWarps, int kMTiles>
constexpr size_t kWeightRingBytes = size_t{16} * kWarps * kDepth * kMTiles * 2 * 32;
template <int kNTiles>
constexpr size_t kRingBytes = size_t{2} * (kDepth + 1) * 8 * kNTiles * kStepElements;

template <int kWarps, int kMTiles, int kNTiles>
constexpr size_t SharedBytes() {
  const size_t partial = sizeof(float) * 8 * kNTiles * kPartialStride<kWarps * 16 * kMTiles>;
  return std::max(partial, kWeightRingBytes<kWarps, kMTiles> + kRingBytes<kNTiles>);
}

// The end of both kernels: this block's fp32 partial sums are in `partial` ([column][row],
// stride kPartialStride<kRows>, columns = the m activation rows, rows = weight rows
// block_row..block_row + kRows); the blocks of the cluster (the k splits of one row range)
// sum them in rank order (the same bits whichever block does it) and write the output.
template <int kRows, int kThreads>
__device__ __forceinline__ void ReduceSplitsAndStore(const GemmArgs& args, float* partial,
                                                     int64_t block_row) {
  constexpr int kStride = kPartialStride<kRows>;
  const int splits = gridDim.x, split = blockIdx.x;
  const int64_t n = args.n;
  const int m = static_cast<int>(args.m);
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // every split's partials written (and this block's, for splits == 1)

  // Block q of the cluster finishes every splits-th group of 4 rows of one column: the sum
  // over the splits in rank order (the same bits whichever block does it), then the output.
  const int64_t ldc = args.ldc != 0                               ? args.ldc
                      : args.output == GemmOutput::kSiluMulBf16 ? n / 2
                                                                : n;
  const float* sources[kMaxSplits];
#pragma unroll
  for (int q = 0; q < kMaxSplits; ++q) {
    sources[q] = q < splits ? cluster.map_shared_rank(partial, q) : partial;
  }
  constexpr int kGroups = kRows / 4;
  for (int unit = split * kThreads + threadIdx.x; unit < kGroups * m; unit += splits * kThreads) {
    const int column = unit / kGroups, row = (unit % kGroups) * 4;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
    for (int q = 0; q < kMaxSplits; ++q) {
      if (q < splits) {
        const float4 v = *reinterpret_cast<const float4*>(sources[q] + column * kStride + row);
        sum.x += v.x;
        sum.y += v.y;
        sum.z += v.z;
        sum.w += v.w;
      }
    }
    const float values[4] = {sum.x, sum.y, sum.z, sum.w};
    const int64_t first = block_row + row;
    if (args.output == GemmOutput::kSiluMulBf16) {
      // rows (2p, 2p + 1) are (gate p, up p); block_row and row are even
      auto* out = static_cast<__nv_bfloat16*>(args.out) + column * ldc + first / 2;
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        if (first + 2 * p + 1 >= n) break;
        const float gate = __bfloat162float(__float2bfloat16(values[2 * p]));
        const float up = __bfloat162float(__float2bfloat16(values[2 * p + 1]));
        out[p] = __float2bfloat16(cuda_kernels::Silu(gate) * up);
      }
      continue;
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      if (first + r >= n) break;
      const int64_t at = column * ldc + first + r;
      if (args.output == GemmOutput::kBF16) {
        static_cast<__nv_bfloat16*>(args.out)[at] = __float2bfloat16(values[r]);
      } else if (args.accumulate) {
        static_cast<float*>(args.out)[at] += values[r];
      } else {
        static_cast<float*>(args.out)[at] = values[r];
      }
    }
  }
  cluster.sync();  // no block leaves while another still reads its shared memory
}

// grid (splits, ceil(n / rows per block)), cluster (splits, 1, 1). Block (q, b) sums k-steps
// [steps * q / splits, steps * (q + 1) / splits) for weight rows [b * kRows, b * kRows + kRows).
template <int kWarps, int kMTiles, int kNTiles>
__global__ void __launch_bounds__(kWarps * 32) SkinnyGemmKernel(GemmArgs args) {
  cuda_kernels::AllowNextGrid();  // the next kernel's blocks may fill our last wave's gaps
  constexpr int kThreads = kWarps * 32, kRows = kWarps * 16 * kMTiles;
  constexpr int kStride = kPartialStride<kRows>;
  // the weight and activation rings in the loop, then the partial sums [8 * kNTiles][kStride]
  extern __shared__ __align__(16) float partial[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int splits = gridDim.x, split = blockIdx.x;
  const int64_t n = args.n, k = args.k;
  const int m = static_cast<int>(args.m);
  const int64_t block_row = static_cast<int64_t>(blockIdx.y) * kRows;
  const int64_t warp_row = block_row + warp * 16 * kMTiles;
  const int64_t steps = k / kStepElements;
  const int64_t s_begin = steps * split / splits, s_end = steps * (split + 1) / splits;

  // Lane (g, t) reads elements [8t, 8t + 8) of each 32-wide step of rows g and g + 8 of each
  // 16-row tile: in mma terms k-step 0 takes elements 8t..8t+3 (a0/a2 of row g, a1/a3 of
  // g + 8) and k-step 1 elements 8t+4..8t+7; the activations are read the same way.
  const uint4* w_rows[kMTiles][2];
#pragma unroll
  for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = min(warp_row + 16 * i + 8 * h + g, n - 1);  // past n: re-read
      w_rows[i][h] = reinterpret_cast<const uint4*>(args.w + row * k + 8 * t);
    }
  }
  uint4* w_ring = reinterpret_cast<uint4*>(partial) + warp * kDepth * kMTiles * 2 * 32 + lane;
  auto copy_weights = [&](int64_t step, int slot) {
#pragma unroll
    for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        cuda_kernels::CpAsync16(w_ring + ((slot * kMTiles + i) * 2 + h) * 32, w_rows[i][h] + step * 4);
      }
    }
  };
  // One cp.async group per k-step's weights (groups 0..kDepth-1), then one per k-step's
  // activations (kDepth..2 kDepth-1); in the loop one group per step for both.
#pragma unroll
  for (int d = 0; d < kDepth; ++d) {
    if (s_begin + d < s_end) copy_weights(s_begin + d, d);
    cuda_kernels::CpAsyncCommit();
  }
  // Launched as a programmatic dependent: the weight loads above overlap the previous
  // kernel's tail; the activations are its output.
  cuda_kernels::WaitForPreviousGrid();

  // The activations of a k-step (8 * kNTiles rows x 64 bytes) are copied by the block's
  // first threads into the ring, read once from L2 per block; each warp then takes its
  // fragments from shared memory (lane (g, t): row 8j + g, bytes 16t..16t+15).
  constexpr int kChunks = 8 * kNTiles * 4;  // 16-byte pieces per k-step
  constexpr int kRingSlots = kDepth + 1;
  uint4* ring = reinterpret_cast<uint4*>(partial) + kWeightRingBytes<kWarps, kMTiles> / 16;
  auto copy_activations = [&](int64_t step, int slot) {
    for (int c = threadIdx.x; c < kChunks; c += kThreads) {
      const int row = c / 4;
      const bool valid = row < m;
      const __nv_bfloat16* src = args.a + static_cast<int64_t>(valid ? row : 0) * k +
                                 step * kStepElements + 8 * (c % 4);
      cuda_kernels::CpAsync16(ring + slot * kChunks + c, src, valid);
    }
  };
#pragma unroll
  for (int d = 0; d < kDepth; ++d) {
    if (s_begin + d < s_end) copy_activations(s_begin + d, d);
    cuda_kernels::CpAsyncCommit();
  }
  float acc[kMTiles][kNTiles][4];
#pragma unroll
  for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
  }

  for (int64_t s = s_begin; s < s_end; s += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      const int64_t step = s + d;
      if (step < s_end) {
        // Groups committed: 2 kDepth + (step - s_begin); kDepth - 1 pending leaves this
        // step's weights and activations landed.
        // The barrier makes every thread's pieces visible, and shows that every warp is done
        // with the slot the copy below refills (read in the step before).
        cuda_kernels::CpAsyncWait<kDepth - 1>();
        __syncthreads();
        const int slot = static_cast<int>(step - s_begin) % kRingSlots;
        if (step + kDepth < s_end) copy_activations(step + kDepth, (slot + kDepth) % kRingSlots);
        uint4 x[kNTiles];
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) x[j] = ring[slot * kChunks + (8 * j + g) * 4 + t];
#pragma unroll
        for (int i = 0; i < kMTiles; ++i) {
          const uint4 lo = w_ring[((d * kMTiles + i) * 2) * 32];
          const uint4 hi = w_ring[((d * kMTiles + i) * 2 + 1) * 32];
          const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};
          const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) {
            MmaBf16(acc[i][j], a0, x[j].x, x[j].y);
            MmaBf16(acc[i][j], a1, x[j].z, x[j].w);
          }
        }
        // Refill this lane's weight slot d (read above, into registers the mma consumed).
        if (step + kDepth < s_end) copy_weights(step + kDepth, d);
        cuda_kernels::CpAsyncCommit();
      }
    }
  }
  cuda_kernels::CpAsyncWait<0>();
  __syncthreads();  // every warp is done with the ring before the partials overwrite it

  // Partials to shared memory, [column][row]: c0/c1 are (row g, columns 2t, 2t + 1), c2/c3
  // row g + 8.
  const int local_row = warp * 16 * kMTiles;
#pragma unroll
  for (int i = 0; i < kMTiles; ++i) {
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = local_row + 16 * i + g + 8 * (e / 2), column = 8 * j + 2 * t + (e % 2);
        partial[column * kStride + row] = acc[i][j][e];
      }
    }
  }
  ReduceSplitsAndStore<kRows, kThreads>(args, partial, block_row);
}

// ---- The wgmma kernel (sm_90a) ----
// A block is one consumer warpgroup (warps 0-3) and one producer warp (warp 4). The
// producer's first lane streams 64-wide k blocks of the weights ([kBN rows][64] bf16) and the
// activations ([64 rows][64], rows past m zero-filled) through a kWgmmaStages ring with
// tensor copies (128-byte swizzle), completing on a `full` mbarrier per stage; the
// consumers multiply each stage with four m64 n kBN k16 wgmmas (activations as A, so the
// batch is the 64-row M; weights as B) into fp32 registers and release it on an `empty`
// mbarrier. grid and cluster as the mma.sync kernel; the same split-K epilogue.
constexpr int kWgmmaK = 64;     // k per stage: one 128-byte swizzled row
constexpr int kWgmmaRows = 64;  // activation rows per tile (the wgmma M)
constexpr int kWgmmaThreads = 160;

template <int kBN>
constexpr int kWgmmaStages = 4;
template <int kBN>
constexpr size_t kWgmmaStageBytes = size_t{2} * kWgmmaK * (kWgmmaRows + kBN);

template <int kBN>
constexpr size_t kWgmmaTileBytes =
    kWgmmaStageBytes<kBN> * kWgmmaStages<kBN> > sizeof(float) * kWgmmaRows * kPartialStride<kBN>
        ? kWgmmaStageBytes<kBN> * kWgmmaStages<kBN>
        : sizeof(float) * kWgmmaRows * kPartialStride<kBN>;
// 1024 bytes of slack for aligning the tiles, the tiles (or partials), two mbarriers a stage
template <int kBN>
constexpr size_t WgmmaSharedBytes() {
  return 1024 + kWgmmaTileBytes<kBN> + 2 * sizeof(uint64_t) * kWgmmaStages<kBN>;
}

template <int kBN>
__global__ void __launch_bounds__(kWgmmaThreads, 1)
    SkinnyWgmmaKernel(const __grid_constant__ CUtensorMap a_map,
                      const __grid_constant__ CUtensorMap w_map, GemmArgs args) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  cuda_kernels::AllowNextGrid();  // the next kernel's blocks may start streaming beside ours
  constexpr int kStages = kWgmmaStages<kBN>;
  constexpr size_t kATileBytes = size_t{2} * kWgmmaK * kWgmmaRows;
  extern __shared__ __align__(16) unsigned char raw[];
  unsigned char* tiles = raw + ((1024 - (cuda_kernels::SharedAddress(raw) & 1023)) & 1023);
  float* partial = reinterpret_cast<float*>(tiles);
  uint64_t* full = reinterpret_cast<uint64_t*>(tiles + kWgmmaTileBytes<kBN>);
  uint64_t* empty = full + kStages;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int splits = gridDim.x, split = blockIdx.x;
  const int64_t block_row = static_cast<int64_t>(blockIdx.y) * kBN;
  const int blocks_k = static_cast<int>((args.k + kWgmmaK - 1) / kWgmmaK);
  const int kb_begin = blocks_k * split / splits;
  const int iters = blocks_k * (split + 1) / splits - kb_begin;
  auto a_tile = [&](int stage) { return tiles + stage * kWgmmaStageBytes<kBN>; };
  auto w_tile = [&](int stage) { return a_tile(stage) + kATileBytes; };
  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st) {
      cuda_kernels::MbarrierInit(&full[st], 1);
      cuda_kernels::MbarrierInit(&empty[st], 4);  // one arrival per consumer warp
    }
    cuda_kernels::FenceMbarrierInit();
  }
  __syncthreads();

  float acc[kBN / 2];
#pragma unroll
  for (int i = 0; i < kBN / 2; ++i) acc[i] = 0.0f;
  if (warp == 4) {
    // The whole warp walks the loop (its waits); its first lane issues the copies.
    // Launched as a programmatic dependent: the first stages' weights are requested before
    // waiting for the previous kernel, whose output is the activations.
    const int first = min(iters, kStages);
    for (int i = 0; i < first && lane == 0; ++i) {
      cuda_kernels::MbarrierArriveExpectTx(&full[i], kWgmmaStageBytes<kBN>);
      cuda_kernels::TmaLoad2d(w_tile(i), &w_map, (kb_begin + i) * kWgmmaK,
                              static_cast<int>(block_row), &full[i]);
    }
    cuda_kernels::WaitForPreviousGrid();
    for (int i = 0; i < first && lane == 0; ++i) {
      cuda_kernels::TmaLoad2d(a_tile(i), &a_map, (kb_begin + i) * kWgmmaK, 0, &full[i]);
    }
    for (int i = kStages; i < iters; ++i) {
      const int st = i % kStages;
      // the consumers released this stage's previous fill (i / kStages - 1)
      cuda_kernels::MbarrierWait(&empty[st], (i / kStages - 1) & 1);
      if (lane == 0) {
        cuda_kernels::MbarrierArriveExpectTx(&full[st], kWgmmaStageBytes<kBN>);
        cuda_kernels::TmaLoad2d(w_tile(st), &w_map, (kb_begin + i) * kWgmmaK,
                                static_cast<int>(block_row), &full[st]);
        cuda_kernels::TmaLoad2d(a_tile(st), &a_map, (kb_begin + i) * kWgmmaK, 0, &full[st]);
      }
      __syncwarp();
    }
  } else {
    for (int i = 0; i < iters; ++i) {
      const int st = i % kStages;
      cuda_kernels::MbarrierWait(&full[st], (i / kStages) & 1);
      cuda_kernels::WgmmaFence();
      const uint64_t a_desc = cuda_kernels::SwizzledKMajorDescriptor(a_tile(st));
      const uint64_t w_desc = cuda_kernels::SwizzledKMajorDescriptor(w_tile(st));
#pragma unroll
      for (int kk = 0; kk < kWgmmaK / 16; ++kk) {
        // +32 bytes per 16-element step, in the descriptor's 16-byte units
        if constexpr (kBN == 128) {
          cuda_kernels::WgmmaM64N128K16(acc, a_desc + 2 * kk, w_desc + 2 * kk);
        } else {
          cuda_kernels::WgmmaM64N64K16(acc, a_desc + 2 * kk, w_desc + 2 * kk);
        }
      }
      cuda_kernels::WgmmaCommit();
      cuda_kernels::WgmmaWait<0>();
      cuda_kernels::FenceAccumulators(acc);
      __syncwarp();
      if (lane == 0) cuda_kernels::MbarrierArrive(&empty[st]);
    }
  }
  __syncthreads();  // every stage consumed before the partials overwrite the tiles
  if (warp < 4) {
    // acc[4j + e]: activation row 16 warp + g (+ 8 for e >= 2), weight row 8j + 2t + (e & 1)
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int column = 16 * warp + g + 8 * (e / 2), row = 8 * j + 2 * t + (e % 2);
        partial[column * kPartialStride<kBN> + row] = acc[4 * j + e];
      }
    }
  }
  // The epilogue reads and writes `out` (accumulating into it): after the previous kernel.
  cuda_kernels::WaitForPreviousGrid();
  ReduceSplitsAndStore<kBN, kWgmmaThreads>(args, partial, block_row);
#else
  __trap();  // built without sm_90a: the host never launches it (kWgmmaBuilt)
#endif
}

// Lets a kernel use kShared bytes of dynamic shared memory; once per kernel.
template <auto kKernel, size_t kShared>
void SetSharedAttribute() {
  static const bool done = [] {
    TANDEM_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(kShared)));
    return true;
  }();
  (void)done;
}

// Both kernels' launch: grid (splits, row_blocks), clusters of `splits` blocks along x, a
// programmatic dependent of the previous kernel. `config` points into the object.
struct SplitLaunch {
  SplitLaunch(int splits, int64_t row_blocks, int threads, size_t shared, cudaStream_t stream) {
    attributes[0].id = cudaLaunchAttributeClusterDimension;
    attributes[0].val.clusterDim.x = static_cast<unsigned>(splits);
    attributes[0].val.clusterDim.y = 1;
    attributes[0].val.clusterDim.z = 1;
    attributes[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[1].val.programmaticStreamSerializationAllowed = 1;
    config.gridDim = dim3(static_cast<unsigned>(splits), static_cast<unsigned>(row_blocks));
    config.blockDim = dim3(static_cast<unsigned>(threads));
    config.dynamicSmemBytes = shared;
    config.stream = stream;
    config.attrs = attributes;
    config.numAttrs = 2;
  }
  SplitLaunch(const SplitLaunch&) = delete;
  SplitLaunch& operator=(const SplitLaunch&) = delete;

  cudaLaunchAttribute attributes[2];
  cudaLaunchConfig_t config = {};
};

struct Occupancy {
  int blocks_per_sm = 0;
  int clusters = 0;  // clusters of `splits` blocks the device runs at once
};

template <typename... Params>
Occupancy OccupancyOfKernel(void (*kernel)(Params...), int splits, int threads, size_t shared) {
  Occupancy o;
  TANDEM_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o.blocks_per_sm, kernel, threads, shared));
  SplitLaunch one(splits, 1, threads, shared, nullptr);
  one.config.numAttrs = 1;  // the cluster shape only
  TANDEM_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&o.clusters, kernel, &one.config));
  return o;
}

template <int kWarps, int kMTiles, int kNTiles>
void LaunchShape(const GemmArgs& a, int splits, cudaStream_t stream) {
  constexpr int kRows = kWarps * 16 * kMTiles;
  constexpr size_t kShared = SharedBytes<kWarps, kMTiles, kNTiles>();
  constexpr auto kernel = SkinnyGemmKernel<kWarps, kMTiles, kNTiles>;
  SetSharedAttribute<kernel, kShared>();
  SplitLaunch launch(splits, (a.n + kRows - 1) / kRows, kWarps * 32, kShared, stream);
  TANDEM_CUDA_CHECK(cudaLaunchKernelEx(&launch.config, kernel, a));
}

template <int kWarps, int kMTiles>
void LaunchTiles(const GemmArgs& a, int splits, cudaStream_t stream) {
  if (a.m <= 16) {
    LaunchShape<kWarps, kMTiles, 2>(a, splits, stream);
  } else if (a.m <= 32) {
    LaunchShape<kWarps, kMTiles, 4>(a, splits, stream);
  } else {
    LaunchShape<kWarps, kMTiles, 8>(a, splits, stream);
  }
}

bool KnownShape(int warps, int m_tiles) {
  return (warps == 4 || warps == 8) && (m_tiles == 1 || m_tiles == 2);
}

int NumSms() {
  static const int sms = [] {
    int device = 0, count = 0;
    TANDEM_CUDA_CHECK(cudaGetDevice(&device));
    TANDEM_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
  }();
  return sms;
}

template <int kWarps, int kMTiles, int kNTiles>
Occupancy OccupancyFor(int splits) {
  constexpr size_t kShared = SharedBytes<kWarps, kMTiles, kNTiles>();
  constexpr auto kernel = SkinnyGemmKernel<kWarps, kMTiles, kNTiles>;
  SetSharedAttribute<kernel, kShared>();
  return OccupancyOfKernel(kernel, splits, kWarps * 32, kShared);
}

template <int kWarps, int kMTiles>
Occupancy OccupancyForRows(int splits, int64_t m) {
  if (m <= 16) return OccupancyFor<kWarps, kMTiles, 2>(splits);
  if (m <= 32) return OccupancyFor<kWarps, kMTiles, 4>(splits);
  return OccupancyFor<kWarps, kMTiles, 8>(splits);
}

// ---- wgmma host side ----
// Built with the sm_90a target (TANDEM_CUDA_ARCHITECTURES=90a, the default): only then do
// configurations with wgmma_rows exist.
#if defined(TANDEM_CUDA_SM90A)
constexpr bool kWgmmaBuilt = true;
#else
constexpr bool kWgmmaBuilt = false;
#endif

// A [rows][inner] bf16 row-major matrix as a 2-D tensor map with [box_rows][64] boxes and the
// 128-byte swizzle the wgmma descriptors expect; out-of-bounds boxes read zeros.
absl::Status MakeTensorMap(CUtensorMap* map, const __nv_bfloat16* base, int64_t rows,
                           int64_t inner, int box_rows) {
  const uint64_t dims[2] = {static_cast<uint64_t>(inner), static_cast<uint64_t>(rows)};
  const uint64_t strides[1] = {static_cast<uint64_t>(inner) * sizeof(__nv_bfloat16)};
  const uint32_t box[2] = {kWgmmaK, static_cast<uint32_t>(box_rows)};
  return MakeBf16TensorMap(map, base, dims, strides, box);
}

template <int kBN>
absl::Status LaunchWgmma(const GemmArgs& a, int splits, cudaStream_t stream) {
  CUtensorMap a_map, w_map;
  TANDEM_RETURN_IF_ERROR(MakeTensorMap(&a_map, a.a, a.m, a.k, kWgmmaRows));
  TANDEM_RETURN_IF_ERROR(MakeTensorMap(&w_map, a.w, a.n, a.k, kBN));
  constexpr auto kernel = SkinnyWgmmaKernel<kBN>;
  SetSharedAttribute<kernel, WgmmaSharedBytes<kBN>()>();
  SplitLaunch launch(splits, (a.n + kBN - 1) / kBN, kWgmmaThreads, WgmmaSharedBytes<kBN>(),
                     stream);
  TANDEM_CUDA_CHECK(cudaLaunchKernelEx(&launch.config, kernel, a_map, w_map, a));
  return absl::OkStatus();
}

// The mma.sync kernel's, cached per configuration and row bucket (the device's answer does
// not change).
Occupancy OccupancyOf(const SkinnyGemmConfig& c, int64_t m) {
  static std::map<std::tuple<int, int, int, int>, Occupancy>* cache =
      new std::map<std::tuple<int, int, int, int>, Occupancy>();
  const int bucket = m <= 16 ? 16 : m <= 32 ? 32 : 64;
  const auto key = std::make_tuple(c.warps, c.m_tiles, c.splits, bucket);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  Occupancy o;
  if (c.warps == 8) {
    o = c.m_tiles == 2 ? OccupancyForRows<8, 2>(c.splits, m) : OccupancyForRows<8, 1>(c.splits, m);
  } else {
    o = c.m_tiles == 2 ? OccupancyForRows<4, 2>(c.splits, m) : OccupancyForRows<4, 1>(c.splits, m);
  }
  cache->emplace(key, o);
  return o;
}

}  // namespace

bool SkinnyGemmSupports(const GemmArgs& a) {
  const bool silu_mul = a.output == GemmOutput::kSiluMulBf16;
  const int64_t columns = silu_mul ? a.n / 2 : a.n;
  return a.m >= 1 && a.m <= kSkinnyGemmMaxRows && a.n > 0 && a.n <= (int64_t{65535} * 64) &&
         a.k > 0 && a.k % kStepElements == 0 && a.a != nullptr && a.w != nullptr &&
         cuda_kernels::Aligned16(a.a) && cuda_kernels::Aligned16(a.w) && a.out != nullptr &&
         (a.ldc == 0 || a.ldc >= columns) && (!a.accumulate || a.output == GemmOutput::kF32) &&
         (!silu_mul || a.n % 2 == 0);
}

std::vector<SkinnyGemmConfig> SkinnyGemmAllConfigs() {
  std::vector<SkinnyGemmConfig> all;
  for (int warps : {4, 8}) {
    for (int m_tiles : {1, 2}) {
      for (int splits = 1; splits <= kMaxSplits; ++splits) all.push_back({warps, m_tiles, splits});
    }
  }
  if (kWgmmaBuilt) {
    for (int rows : {64, 128}) {
      for (int splits = 1; splits <= kMaxSplits; ++splits) {
        all.push_back({.splits = splits, .wgmma_rows = rows});
      }
    }
  }
  return all;
}

SkinnyGemmConfig SkinnyGemmChooseConfig(const GemmArgs& a) {
  const int sms = NumSms();
  if (kWgmmaBuilt) {
    // The wgmma kernel (2-3 blocks per SM): 128-row blocks, unsplit, where they alone give
    // every SM one; else 64-row blocks split to about 2.5 blocks per SM (the best of the
    // H200 sweep on the 8B shapes at m = 64, docs/cuda_backend.md).
    if ((a.n + 127) / 128 >= sms) return {.splits = 1, .wgmma_rows = 128};
    const double tiles = static_cast<double>((a.n + 63) / 64);
    const int64_t max_splits = std::max<int64_t>(1, (a.k + kWgmmaK - 1) / kWgmmaK / 4);
    const int64_t splits = std::clamp<int64_t>(std::llround(2.5 * sms / tiles), 1,
                                               std::min<int64_t>(kMaxSplits, max_splits));
    return {.splits = static_cast<int>(splits), .wgmma_rows = 64};
  }
  // mma.sync: the block shape and split count whose grid fills the SMs best in its waves:
  // the blocks one wave holds are min(SMs x blocks per SM, clusters the device co-schedules x
  // splits) (a cluster's blocks share a GPC, so a wave can hold fewer than the SMs suggest).
  // Each split keeps at least 2 * kDepth k-steps; another split costs a little (its partials).
  const int64_t steps = a.k / kStepElements;
  SkinnyGemmConfig best{8, 2, 1};
  double best_score = -1.0;
  for (const SkinnyGemmConfig& c : SkinnyGemmAllConfigs()) {
    if (c.wgmma_rows != 0) continue;
    if (c.splits > 1 && steps / c.splits < 2 * kDepth) continue;
    const int rows = c.warps * 16 * c.m_tiles;
    const int64_t blocks = (a.n + rows - 1) / rows * c.splits;
    const Occupancy occupancy = OccupancyOf(c, a.m);
    const int64_t per_wave = std::min<int64_t>(int64_t{sms} * occupancy.blocks_per_sm,
                                               int64_t{occupancy.clusters} * c.splits);
    if (per_wave <= 0) continue;
    const double waves = static_cast<double>(blocks) / static_cast<double>(per_wave);
    // warps resident per SM over the run, relative to the most any configuration keeps
    const double fill = waves / std::ceil(waves) * static_cast<double>(per_wave) * c.warps /
                        (static_cast<double>(sms) * 16);
    const double score = fill - 0.01 * c.splits;
    if (score > best_score) {
      best_score = score;
      best = c;
    }
  }
  return best;
}

absl::Status LaunchSkinnyGemm(const GemmArgs& a, cudaStream_t stream, SkinnyGemmConfig config) {
  if (!SkinnyGemmSupports(a)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "skinny_gemm: need 1 <= m <= ", kSkinnyGemmMaxRows, ", k % 32 == 0, 16-byte aligned "
        "operands, ldc >= n (n / 2 and n even for kSiluMulBf16), fp32 output when "
        "accumulating; got m=", a.m, " n=", a.n, " k=", a.k, " ldc=", a.ldc));
  }
  if (config.warps == 0 && config.m_tiles == 0 && config.splits == 0 && config.wgmma_rows == 0) {
    config = SkinnyGemmChooseConfig(a);
  }
  const bool wgmma = config.wgmma_rows != 0;
  if ((wgmma ? !kWgmmaBuilt || (config.wgmma_rows != 64 && config.wgmma_rows != 128) ||
                   config.warps != 0 || config.m_tiles != 0
             : !KnownShape(config.warps, config.m_tiles)) ||
      config.splits < 1 || config.splits > kMaxSplits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "skinny_gemm: config must be warps in {4, 8}, m_tiles in {1, 2} (or both 0 and "
        "wgmma_rows in {64, 128}, built for sm_90a: ", kWgmmaBuilt, "), splits in [1, ",
        kMaxSplits, "], got ", config.warps, ", ", config.m_tiles, ", ", config.wgmma_rows,
        ", ", config.splits));
  }
  config.splits = static_cast<int>(std::min<int64_t>(config.splits, a.k / kStepElements));
  if (wgmma) {
    return config.wgmma_rows == 128 ? LaunchWgmma<128>(a, config.splits, stream)
                                    : LaunchWgmma<64>(a, config.splits, stream);
  }
  if (config.warps == 8) {
    config.m_tiles == 2 ? LaunchTiles<8, 2>(a, config.splits, stream)
                        : LaunchTiles<8, 1>(a, config.splits, stream);
  } else {
    config.m_tiles == 2 ? LaunchTiles<4, 2>(a, config.splits, stream)
                        : LaunchTiles<4, 1>(a, config.splits, stream);
  }
  return absl::OkStatus();
}

}  // namespace tandem
