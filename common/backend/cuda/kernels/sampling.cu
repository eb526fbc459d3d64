// The sampler chain as kernels; see sampling.h for the contract and docs/cuda_backend.md
// ("GPU sampler") for how each stage reproduces the CPU stack's arithmetic.
#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/sampling.h"

namespace tandem {
namespace {

constexpr int kThreads = 1024;  // one block per row
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;      // 8-bit radix digits, 4 passes over a 32-bit key
constexpr unsigned kFull = 0xffffffffu;

// ---------------------------------------------------------------------------------------
// Edits (processors)

__device__ __forceinline__ float ApplySamplingEdit(float v, const SamplingEdit& e, float penalty) {
  if (e.flags & kSamplingEditBan) return -INFINITY;
  // Round-to-nearest intrinsics: no contraction, the same float arithmetic as the CPU chain.
  if (e.flags & kSamplingEditBias) v = __fadd_rn(v, e.bias);
  if (e.flags & kSamplingEditRepetition) {
    v = v < 0.0f ? __fmul_rn(v, penalty) : __fdiv_rn(v, penalty);
  }
  if (e.flags & kSamplingEditSubtract) v = __fsub_rn(v, e.subtract);
  return v;
}

__device__ __forceinline__ float* EditTarget(const SamplingEditArgs& a, const SamplingEdit& e) {
  return a.logits + static_cast<int64_t>(e.row) * a.row_stride + e.token;
}

__global__ void EditInPlaceKernel(SamplingEditArgs a) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= a.num_edits) return;
  const SamplingEdit e = a.edits[i];
  float* p = EditTarget(a, e);
  *p = ApplySamplingEdit(*p, e, a.repetition_penalty[e.row]);
}

__global__ void EditComputeKernel(SamplingEditArgs a) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= a.num_edits) return;
  const SamplingEdit e = a.edits[i];
  a.edit_values[i] = ApplySamplingEdit(*EditTarget(a, e), e, a.repetition_penalty[e.row]);
}

// grid (chunks, rows): rows in allowed mode become -inf everywhere (the scatter then
// restores the allowed tokens' processed values).
__global__ void FillDisallowedKernel(SamplingEditArgs a) {
  const int row = blockIdx.y;
  if (!a.allowed_mode[row]) return;
  float* x = a.logits + static_cast<int64_t>(row) * a.row_stride;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < a.vocab_size;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = -INFINITY;
  }
}

__global__ void EditScatterKernel(SamplingEditArgs a) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= a.num_edits) return;
  *EditTarget(a, a.edits[i]) = a.edit_values[i];
}

// ---------------------------------------------------------------------------------------
// The fused per-row kernel

// Monotone map of floats to unsigned keys (ascending float = ascending key); -0 maps to +0's
// key so that equal floats have equal keys (the CPU compares values, not bits).
__device__ __forceinline__ uint32_t OrderedKey(float v) {
  uint32_t b = __float_as_uint(v);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float KeyToFloat(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// A row as the chain sees it after temperature (applied on the fly, exactly as `v /= T`).
struct Row {
  const float* __restrict__ x;
  int size;
  bool scale;
  float temperature;
  __device__ __forceinline__ float Scaled(float v) const {
    return scale ? __fdiv_rn(v, temperature) : v;
  }
  __device__ __forceinline__ float At(int i) const { return Scaled(x[i]); }
};

// f(i, value) for every token, 4 loads in flight per thread.
template <typename F>
__device__ __forceinline__ void ForEach(const Row& row, F f) {
  for (int base = threadIdx.x; base < row.size; base += 4 * kThreads) {
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = base + j * kThreads;
      v[j] = i < row.size ? row.At(i) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = base + j * kThreads;
      if (i < row.size) f(i, v[j]);
    }
  }
}

// ForEach with 16-byte loads (4 in flight per thread: 64 KB per block) where the row is
// 16-byte aligned; for passes whose result does not depend on the order of the calls.
template <typename F>
__device__ __forceinline__ void ForEachUnordered(const Row& row, F f) {
  if ((reinterpret_cast<uintptr_t>(row.x) & 15u) != 0) return ForEach(row, f);
  const int quads = row.size / 4;
  const float4* x4 = reinterpret_cast<const float4*>(row.x);
  for (int base = threadIdx.x; base < quads; base += 4 * kThreads) {
    float4 v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int q = base + j * kThreads;
      v[j] = q < quads ? x4[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int q = base + j * kThreads;
      if (q >= quads) break;
      f(4 * q, row.Scaled(v[j].x));
      f(4 * q + 1, row.Scaled(v[j].y));
      f(4 * q + 2, row.Scaled(v[j].z));
      f(4 * q + 3, row.Scaled(v[j].w));
    }
  }
  for (int i = 4 * quads + threadIdx.x; i < row.size; i += kThreads) f(i, row.At(i));
}

struct Shared {
  unsigned long long hist_mass[kBins];
  unsigned int hist_count[kBins];
  double warp_double[kWarps];
  float warp_value[kWarps];
  int warp_index[kWarps];
  // Broadcast slots.
  int bin;
  unsigned long long before;
  unsigned long long target;
  int selected_warp;
  double selected_base;
  double total;
  int found;
  int top_count;
  int top_ids[kSamplingMaxTopLogprobs];
  float top_values[kSamplingMaxTopLogprobs];
};

__device__ __forceinline__ int Lane() { return threadIdx.x & 31; }
__device__ __forceinline__ int Warp() { return threadIdx.x >> 5; }

// (value desc, index asc): the CPU's argmax order (std::max_element keeps the first).
__device__ __forceinline__ bool Better(float a, int ia, float b, int ib) {
  return a > b || (a == b && ia < ib);
}

// Warp then block reduction of (value, index) by Better; the result in thread 0.
__device__ void BlockBest(float& best, int& best_index, float* values, int* indices) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(kFull, best, offset);
    const int i = __shfl_xor_sync(kFull, best_index, offset);
    if (Better(v, i, best, best_index)) best = v, best_index = i;
  }
  const int warps = blockDim.x / 32;
  if (Lane() == 0) values[Warp()] = best, indices[Warp()] = best_index;
  __syncthreads();
  if (Warp() == 0) {
    best = Lane() < warps ? values[Lane()] : -INFINITY;
    best_index = Lane() < warps ? indices[Lane()] : INT_MAX;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float v = __shfl_xor_sync(kFull, best, offset);
      const int i = __shfl_xor_sync(kFull, best_index, offset);
      if (Better(v, i, best, best_index)) best = v, best_index = i;
    }
  }
}

// Largest value of the row and its lowest index, to every thread.
__device__ void BlockArgMax(const Row& row, Shared& sh, float* max_value, int* max_index) {
  float best = -INFINITY;
  int best_index = INT_MAX;
  ForEachUnordered(row, [&](int i, float v) {
    if (Better(v, i, best, best_index)) best = v, best_index = i;
  });
  BlockBest(best, best_index, sh.warp_value, sh.warp_index);
  if (threadIdx.x == 0) sh.warp_value[0] = best, sh.warp_index[0] = best_index;
  __syncthreads();
  *max_value = sh.warp_value[0];
  *max_index = sh.warp_index[0];
  __syncthreads();
}

__device__ __forceinline__ double WarpSumDouble(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFull, v, offset);
  return v;
}

__device__ double BlockSumDouble(double v, Shared& sh) {
  v = WarpSumDouble(v);
  if (Lane() == 0) sh.warp_double[Warp()] = v;
  __syncthreads();
  if (Warp() == 0) {
    const double total = WarpSumDouble(sh.warp_double[Lane()]);
    if (Lane() == 0) sh.total = total;
  }
  __syncthreads();
  const double total = sh.total;
  __syncthreads();
  return total;
}

// Warp 0 only. Walks the 256 bins in ascending (or descending) digit order and finds the
// first bin where base + the inclusive cumulative weight exceeds `target`; writes sh.bin
// (-1 if none) and sh.before (base + the weight of the bins before it).
template <typename W>
__device__ void FindBin(const W* weights, bool descending, unsigned long long base,
                        unsigned long long target, Shared& sh) {
  const int lane = Lane();
  auto bin_at = [&](int j) { return descending ? kBins - 1 - j : j; };
  unsigned long long sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) sum += weights[bin_at(lane * 8 + j)];
  unsigned long long inclusive = sum;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const unsigned long long t = __shfl_up_sync(kFull, inclusive, offset);
    if (lane >= offset) inclusive += t;
  }
  const unsigned long long grand_total = __shfl_sync(kFull, inclusive, 31);
  const unsigned crossing = __ballot_sync(kFull, base + inclusive > target);
  if (crossing == 0) {
    if (lane == 0) sh.bin = -1, sh.before = base + grand_total;
    return;
  }
  if (lane == __ffs(crossing) - 1) {
    unsigned long long running = base + inclusive - sum;
    for (int j = 0; j < 8; ++j) {
      const int b = bin_at(lane * 8 + j);
      if (running + weights[b] > target) {
        sh.bin = b;
        sh.before = running;
        break;
      }
      running += weights[b];
    }
  }
}

// Adds `weight` (and a count of 1) of each including lane to its digit's bins, one atomic
// per distinct digit per warp: most tokens share a few digits, and contended shared atomics
// serialize. Called by all 32 lanes of a warp (warp-uniform).
__device__ __forceinline__ void WarpAggregatedAdd(bool include, uint32_t digit,
                                                  unsigned long long weight, bool with_mass,
                                                  Shared& sh) {
  unsigned pending = __ballot_sync(kFull, include);
  while (pending != 0) {
    const int leader = __ffs(pending) - 1;
    const uint32_t leader_digit = __shfl_sync(kFull, digit, leader);
    const bool mine = include && digit == leader_digit;
    const unsigned peers = __ballot_sync(kFull, mine);
    unsigned long long sum = 0;
    if (with_mass) {
      sum = mine ? weight : 0;
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(kFull, sum, offset);
    }
    if (Lane() == leader) {
      atomicAdd(&sh.hist_count[leader_digit], static_cast<unsigned>(__popc(peers)));
      if (sum != 0) atomicAdd(&sh.hist_mass[leader_digit], sum);
    }
    pending &= ~peers;
  }
}

// The key of the k-th largest value (1 <= k <= row.size, counting repeats). *ties_needed:
// how many of the values equal to it rank within the top k; *ties_total: how many there are.
__device__ uint32_t SelectKthLargestKey(const Row& row, int k, Shared& sh, int* ties_needed,
                                        int* ties_total) {
  uint32_t prefix = 0, mask = 0;
  unsigned long long remaining = static_cast<unsigned long long>(k);
  int total = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < kBins; b += kThreads) sh.hist_count[b] = 0;
    __syncthreads();
    for (int start = 0; start < row.size; start += kThreads) {
      const int i = start + static_cast<int>(threadIdx.x);
      const uint32_t key = OrderedKey(i < row.size ? row.At(i) : 0.0f);
      WarpAggregatedAdd(i < row.size && (key & mask) == prefix, (key >> shift) & 0xffu, 0,
                        /*with_mass=*/false, sh);
    }
    __syncthreads();
    if (Warp() == 0) FindBin(sh.hist_count, /*descending=*/true, 0, remaining - 1, sh);
    __syncthreads();
    const int bin = sh.bin;  // always found: the bins hold >= remaining values
    remaining -= sh.before;
    total = static_cast<int>(sh.hist_count[bin]);
    prefix |= static_cast<uint32_t>(bin) << shift;
    mask |= 0xffu << shift;
    __syncthreads();
  }
  *ties_needed = static_cast<int>(remaining);
  *ties_total = total;
  return prefix;
}

// The smallest index whose inclusive prefix sum of weight(i) (in index order) exceeds
// `target` (or `target` * the total when `relative`); -1 if none. Each warp owns a
// contiguous segment; the warp whose segment crosses walks it 32 tokens at a time.
template <typename Weight>
__device__ int FindFirstCrossing(int size, Weight weight, double target, bool relative,
                                 Shared& sh) {
  const int lane = Lane(), warp = Warp();
  const int segment = ((size + kWarps - 1) / kWarps + 31) / 32 * 32;
  const int begin = warp * segment, end = min(size, begin + segment);
  double sum = 0.0;
  for (int i = begin + lane; i < end; i += 32) sum += weight(i);
  sum = WarpSumDouble(sum);
  if (lane == 0) sh.warp_double[warp] = sum;
  __syncthreads();
  if (warp == 0) {
    const double own = sh.warp_double[lane];
    double inclusive = own;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const double t = __shfl_up_sync(kFull, inclusive, offset);
      if (lane >= offset) inclusive += t;
    }
    double exclusive = __shfl_up_sync(kFull, inclusive, 1);
    if (lane == 0) exclusive = 0.0;
    const double grand_total = __shfl_sync(kFull, inclusive, 31);
    const double goal = relative ? target * grand_total : target;
    const unsigned crossing = __ballot_sync(kFull, inclusive > goal);
    const int selected = crossing ? __ffs(crossing) - 1 : -1;
    const double selected_base = __shfl_sync(kFull, exclusive, selected < 0 ? 0 : selected);
    if (lane == 0) {
      sh.selected_warp = selected;
      sh.selected_base = selected_base;
      sh.total = goal;
      sh.found = -1;
    }
  }
  __syncthreads();
  if (warp == sh.selected_warp) {
    const double goal = sh.total;
    double running = sh.selected_base;
    int found = -1;
    // Past the segment's end only if rounding made the walk disagree with the warp sums.
    for (int tile = begin; tile < size; tile += 32) {
      const int i = tile + lane;
      double inclusive = i < size ? weight(i) : 0.0;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const double t = __shfl_up_sync(kFull, inclusive, offset);
        if (lane >= offset) inclusive += t;
      }
      const unsigned hit = __ballot_sync(kFull, running + inclusive > goal);
      if (hit) {
        found = tile + __ffs(hit) - 1;
        break;
      }
      running += __shfl_sync(kFull, inclusive, 31);
    }
    if (lane == 0) sh.found = found;
  }
  __syncthreads();
  const int found = sh.found;
  __syncthreads();
  return found;
}

// The largest index where keep(i, value) holds; -1 if none.
template <typename Keep>
__device__ int LastKept(const Row& row, Keep keep, Shared& sh) {
  if (threadIdx.x == 0) sh.found = -1;
  __syncthreads();
  int last = -1;
  ForEach(row, [&](int i, float v) {
    if (keep(i, v)) last = max(last, i);
  });
  if (last >= 0) atomicMax(&sh.found, last);
  __syncthreads();
  const int found = sh.found;
  __syncthreads();
  return found;
}

// The index of the `n`-th (1-based) token whose key equals `key`, in index order.
__device__ int NthTokenWithKey(const Row& row, uint32_t key, int n, Shared& sh) {
  return FindFirstCrossing(
      row.size, [&](int i) { return OrderedKey(row.At(i)) == key ? 1.0 : 0.0; }, n - 0.5,
      /*relative=*/false, sh);
}

// Logprobs: log-sum-exp of the row (as LogSumExp in logprobs.cc) and its top n, descending,
// lower id first on ties (as ComputeRowLogprobs). Writes the result's top fields; returns
// the log-normalizer.
__device__ double RowLogprobs(const Row& row, float max_value, int top_n, Shared& sh,
                              SamplingRowResult* result) {
  double log_normalizer = max_value;
  if (isfinite(max_value)) {
    const double m = max_value;
    double sum = 0.0;
    ForEach(row, [&](int, float v) { sum += exp(static_cast<double>(v) - m); });
    log_normalizer = m + log(BlockSumDouble(sum, sh));
  }
  const int n = min(top_n, row.size);
  if (n <= 0) {
    if (threadIdx.x == 0) result->num_top = 0;
    return log_normalizer;
  }
  int ties_needed = 0, ties_total = 0;
  const uint32_t key = SelectKthLargestKey(row, n, sh, &ties_needed, &ties_total);
  // Ties at the boundary: the lowest ids among them (ComputeRowLogprobs' order).
  const int last_tie = ties_needed == ties_total ? INT_MAX
                                                 : NthTokenWithKey(row, key, ties_needed, sh);
  if (threadIdx.x == 0) sh.top_count = 0;
  __syncthreads();
  ForEach(row, [&](int i, float v) {
    const uint32_t k = OrderedKey(v);
    if (k > key || (k == key && i <= last_tie)) {
      const int slot = atomicAdd(&sh.top_count, 1);
      if (slot < kSamplingMaxTopLogprobs) sh.top_ids[slot] = i, sh.top_values[slot] = v;
    }
  });
  __syncthreads();
  if (threadIdx.x == 0) {
    const int count = min(sh.top_count, n);
    for (int a = 1; a < count; ++a) {  // insertion sort of <= 20 entries
      const float v = sh.top_values[a];
      const int id = sh.top_ids[a];
      int b = a - 1;
      while (b >= 0 && Better(v, id, sh.top_values[b], sh.top_ids[b])) {
        sh.top_values[b + 1] = sh.top_values[b];
        sh.top_ids[b + 1] = sh.top_ids[b];
        --b;
      }
      sh.top_values[b + 1] = v;
      sh.top_ids[b + 1] = id;
    }
    result->num_top = count;
    for (int a = 0; a < count; ++a) {
      result->top_ids[a] = sh.top_ids[a];
      result->top_logprobs[a] =
          static_cast<float>(static_cast<double>(sh.top_values[a]) - log_normalizer);
    }
  }
  __syncthreads();
  return log_normalizer;
}

// Top-p boundary (TopP in logits_warpers.cc): the CPU sorts the tokens kept by top-k
// ascending by (value, id) and removes them while the cumulative probability is
// <= 1 - top_p. Here the same boundary comes from a radix select by probability mass in
// 64-bit fixed point (exact integer sums, so the digit search is order-independent):
// returns the boundary key and in *last_removed_tie the largest id removed among the tokens
// with that key (-1: none). Tokens with a smaller key are removed, larger ones kept.
__device__ uint32_t TopPBoundary(const Row& row, float max_value, uint32_t min_key, float top_p,
                                 Shared& sh, int* last_removed_tie) {
  const int scale_bits = 62 - (32 - __clz(row.size));  // size * 2^scale_bits < 2^62
  const double scale = ldexp(1.0, scale_bits);
  const double m = max_value;
  auto mass = [&](float v) -> unsigned long long {
    return __double2ull_rn(exp(static_cast<double>(v) - m) * scale);
  };
  uint32_t prefix = 0, mask = 0;
  unsigned long long below = 0;
  int ties_total = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < kBins; b += kThreads) sh.hist_count[b] = 0, sh.hist_mass[b] = 0;
    __syncthreads();
    for (int start = 0; start < row.size; start += kThreads) {
      const int i = start + static_cast<int>(threadIdx.x);
      const float v = i < row.size ? row.At(i) : -INFINITY;
      const uint32_t key = OrderedKey(v);
      const bool include = i < row.size && key >= min_key && (key & mask) == prefix;
      WarpAggregatedAdd(include, (key >> shift) & 0xffu, include ? mass(v) : 0,
                        /*with_mass=*/true, sh);
    }
    __syncthreads();
    if (Warp() == 0) {
      if (shift == 24) {
        unsigned long long total = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) total += sh.hist_mass[Lane() * 8 + j];
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(kFull, total, offset);
        // Removed while cumulative <= 1 - top_p; the most likely token always stays, so the
        // crossing is at the latest at the last unit of mass.
        const double threshold = (1.0 - static_cast<double>(top_p)) * static_cast<double>(total);
        unsigned long long target = threshold >= static_cast<double>(total)
                                        ? total
                                        : static_cast<unsigned long long>(floor(threshold));
        if (target >= total) target = total - 1;
        if (Lane() == 0) sh.target = target;
        __syncwarp();
      }
      FindBin(sh.hist_mass, /*descending=*/false, below, sh.target, sh);
    }
    __syncthreads();
    const int bin = sh.bin;  // found: the target is below the total mass
    below = sh.before;
    ties_total = static_cast<int>(sh.hist_count[bin]);
    prefix |= static_cast<uint32_t>(bin) << shift;
    mask |= 0xffu << shift;
    __syncthreads();
  }
  // Tokens equal to the boundary value carry the same mass q each and are removed in id
  // order while below + j * q <= target.
  const unsigned long long q = mass(KeyToFloat(prefix));
  const unsigned long long target = sh.target;
  long long removed = q == 0 ? 0 : static_cast<long long>((target - below) / q);
  removed = min(removed, static_cast<long long>(ties_total - 1));
  *last_removed_tie = removed <= 0 ? -1 : NthTokenWithKey(row, prefix, static_cast<int>(removed), sh);
  return prefix;
}

// What survives top-k, top-p and min-p (the draw skips -inf like DrawFromLogits).
struct KeepPredicate {
  uint32_t min_key;       // top-k: key >= the k-th largest's
  bool top_p;
  uint32_t boundary_key;  // top-p: key > boundary, or == boundary and id > last_removed
  int last_removed;
  bool min_p;
  float min_p_value;
  float max_value;
  __device__ __forceinline__ bool operator()(int i, float v) const {
    if (v == -INFINITY) return false;
    const uint32_t key = OrderedKey(v);
    if (key < min_key) return false;
    if (top_p && (key < boundary_key || (key == boundary_key && i <= last_removed))) {
      return false;
    }
    // MinP: std::exp(float) < min_p. The double exp rounded to float is the correctly
    // rounded expf, which glibc's expf matches (its error is < 0.502 ulp).
    if (min_p && __double2float_rn(exp(static_cast<double>(__fsub_rn(v, max_value)))) < min_p_value) {
      return false;
    }
    return true;
  }
};

__global__ void __launch_bounds__(kThreads, 1) SampleRowsKernel(SampleRowsArgs a) {
  __shared__ Shared sh;
  const int r = blockIdx.x;
  const SamplingRowParams p = a.params[r];
  if (p.skip) return;
  SamplingRowResult* result = a.results + r;
  const bool scale = !p.greedy && p.temperature != 1.0f;
  const Row row{a.logits + r * a.row_stride, static_cast<int>(a.vocab_size), scale,
                p.temperature};

  float max_value;
  int max_index;
  BlockArgMax(row, sh, &max_value, &max_index);
  double log_normalizer = 0.0;
  if (p.logprobs >= 0) log_normalizer = RowLogprobs(row, max_value, p.logprobs, sh, result);

  int token = max_index == INT_MAX ? -1 : max_index;  // INT_MAX: every logit NaN
  if (!p.greedy) {
    KeepPredicate keep{0, false, 0, -1, p.min_p > 0.0f, p.min_p, max_value};
    if (p.top_k > 0 && p.top_k < row.size) {
      int ties_needed = 0, ties_total = 0;
      keep.min_key = SelectKthLargestKey(row, p.top_k, sh, &ties_needed, &ties_total);
    }
    if (p.top_p < 1.0f && isfinite(max_value)) {
      keep.top_p = true;
      keep.boundary_key =
          TopPBoundary(row, max_value, keep.min_key, p.top_p, sh, &keep.last_removed);
    }
    // DrawFromLogits: u * sum(exp(double(v - max))), walked in id order.
    auto weight = [&](int i) -> double {
      const float v = row.At(i);
      return keep(i, v) ? exp(static_cast<double>(__fsub_rn(v, max_value))) : 0.0;
    };
    token = isfinite(max_value) ? FindFirstCrossing(row.size, weight, p.uniform, true, sh) : -1;
    // Rounding left a sliver of mass: the last kept token takes it (as on the CPU).
    if (token < 0) token = LastKept(row, keep, sh);
  }
  if (threadIdx.x == 0) {
    result->token = token;
    if (p.logprobs >= 0) {
      result->log_normalizer = log_normalizer;
      result->chosen_logprob =
          token < 0 ? 0.0f
                    : static_cast<float>(static_cast<double>(row.At(token)) - log_normalizer);
    } else {
      result->num_top = 0;
    }
  }
}

constexpr int kGreedyThreads = 256;

// grid (kGreedyArgMaxBlocks, num_rows): block b scans its contiguous share of the row.
__global__ void __launch_bounds__(kGreedyThreads) GreedyArgMaxKernel(GreedyArgMaxArgs a) {
  __shared__ float values[kGreedyThreads / 32];
  __shared__ int indices[kGreedyThreads / 32];
  __shared__ bool last;
  const int r = blockIdx.y, blocks = gridDim.x;
  const float* x = a.logits + r * a.row_stride;
  const int n = static_cast<int>(a.vocab_size);
  float best = -INFINITY;  // BlockArgMax's start: -inf rows still give their lowest index
  int best_index = INT_MAX;
  auto visit = [&](int i, float v) {
    if (Better(v, i, best, best_index)) best = v, best_index = i;
  };
  if ((reinterpret_cast<uintptr_t>(x) & 15u) == 0) {
    const int quads = n / 4, per = (quads + blocks - 1) / blocks;
    const int q0 = blockIdx.x * per, q1 = min(q0 + per, quads);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int base = q0 + threadIdx.x; base < q1; base += 4 * kGreedyThreads) {
      float4 v[4];  // every load issued before any use
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int q = base + j * kGreedyThreads;
        v[j] = q < q1 ? __ldcs(x4 + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int q = base + j * kGreedyThreads;
        if (q >= q1) break;
        visit(4 * q, v[j].x);
        visit(4 * q + 1, v[j].y);
        visit(4 * q + 2, v[j].z);
        visit(4 * q + 3, v[j].w);
      }
    }
    if (blockIdx.x == blocks - 1) {
      for (int i = 4 * quads + threadIdx.x; i < n; i += kGreedyThreads) visit(i, x[i]);
    }
  } else {
    const int per = (n + blocks - 1) / blocks;
    const int i1 = min((blockIdx.x + 1) * per, n);
    for (int i = blockIdx.x * per + threadIdx.x; i < i1; i += kGreedyThreads) visit(i, x[i]);
  }
  BlockBest(best, best_index, values, indices);
  if (threadIdx.x == 0) {
    a.partial_values[r * blocks + blockIdx.x] = best;
    a.partial_indices[r * blocks + blockIdx.x] = best_index;
    __threadfence();  // the partial is visible before the ticket counts it
    last = atomicAdd(a.counters + r, 1u) == static_cast<unsigned>(blocks - 1);
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  best = -INFINITY;
  best_index = INT_MAX;
  for (int b = threadIdx.x; b < blocks; b += kGreedyThreads) {
    const float v = __ldcg(a.partial_values + r * blocks + b);
    const int i = __ldcg(a.partial_indices + r * blocks + b);
    if (Better(v, i, best, best_index)) best = v, best_index = i;
  }
  __syncthreads();  // values / indices are reused
  BlockBest(best, best_index, values, indices);
  if (threadIdx.x == 0) {
    a.results[r].token = best_index == INT_MAX ? -1 : best_index;  // INT_MAX: all NaN
    a.results[r].num_top = 0;
    a.counters[r] = 0;
  }
}

unsigned Blocks(int64_t items, int threads) {
  return static_cast<unsigned>((items + threads - 1) / threads);
}

absl::Status CheckRows(const char* what, int64_t vocab_size, int64_t row_stride,
                       int32_t num_rows) {
  if (vocab_size <= 0 || vocab_size > kSamplingMaxVocab) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": vocab_size must be in [1, ",
                                                   kSamplingMaxVocab, "], got ", vocab_size));
  }
  if (row_stride < vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": row_stride must be >= vocab_size (", vocab_size, "), got ", row_stride));
  }
  if (num_rows < 0 || num_rows > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": num_rows must be in [0, 65535], got ", num_rows));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchApplySamplingEdits(const SamplingEditArgs& a, cudaStream_t stream) {
  if (absl::Status s = CheckRows("sampling edits", a.vocab_size, a.row_stride, a.num_rows);
      !s.ok()) {
    return s;
  }
  if (a.num_edits < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling edits: num_edits must be >= 0, got ", a.num_edits));
  }
  if (a.num_rows == 0 || (a.num_edits == 0 && !a.any_allowed_mode)) return absl::OkStatus();
  if (a.logits == nullptr || a.repetition_penalty == nullptr || a.allowed_mode == nullptr ||
      (a.num_edits > 0 && a.edits == nullptr) ||
      (a.any_allowed_mode && a.num_edits > 0 && a.edit_values == nullptr)) {
    return absl::InvalidArgumentError("sampling edits: null pointer");
  }
  constexpr int kEditThreads = 256;
  if (!a.any_allowed_mode) {
    EditInPlaceKernel<<<Blocks(a.num_edits, kEditThreads), kEditThreads, 0, stream>>>(a);
    TANDEM_CUDA_CHECK_LAUNCH();
    return absl::OkStatus();
  }
  if (a.num_edits > 0) {
    EditComputeKernel<<<Blocks(a.num_edits, kEditThreads), kEditThreads, 0, stream>>>(a);
    TANDEM_CUDA_CHECK_LAUNCH();
  }
  const dim3 fill_grid(static_cast<unsigned>(std::min<int64_t>(Blocks(a.vocab_size, 1024), 64)),
                       static_cast<unsigned>(a.num_rows));
  FillDisallowedKernel<<<fill_grid, 1024, 0, stream>>>(a);
  TANDEM_CUDA_CHECK_LAUNCH();
  if (a.num_edits > 0) {
    EditScatterKernel<<<Blocks(a.num_edits, kEditThreads), kEditThreads, 0, stream>>>(a);
    TANDEM_CUDA_CHECK_LAUNCH();
  }
  return absl::OkStatus();
}

absl::Status LaunchSampleRows(const SampleRowsArgs& a, cudaStream_t stream) {
  if (absl::Status s = CheckRows("sample rows", a.vocab_size, a.row_stride, a.num_rows);
      !s.ok()) {
    return s;
  }
  if (a.num_rows == 0) return absl::OkStatus();
  if (a.logits == nullptr || a.params == nullptr || a.results == nullptr) {
    return absl::InvalidArgumentError("sample rows: null pointer");
  }
  SampleRowsKernel<<<static_cast<unsigned>(a.num_rows), kThreads, 0, stream>>>(a);
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status LaunchGreedyArgMax(const GreedyArgMaxArgs& a, cudaStream_t stream) {
  if (absl::Status s = CheckRows("greedy argmax", a.vocab_size, a.row_stride, a.num_rows);
      !s.ok()) {
    return s;
  }
  if (a.num_rows == 0) return absl::OkStatus();
  if (a.logits == nullptr || a.results == nullptr || a.partial_values == nullptr ||
      a.partial_indices == nullptr || a.counters == nullptr) {
    return absl::InvalidArgumentError("greedy argmax: null pointer");
  }
  GreedyArgMaxKernel<<<dim3(kGreedyArgMaxBlocks, static_cast<unsigned>(a.num_rows)),
                       kGreedyThreads, 0, stream>>>(a);
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

}  // namespace tandem
