// Shared by cuda_model_bench's translation units: timing helpers, the random operands and
// the kernel-level decode benchmarks (cuda_kernel_bench.cc), which run with or without a
// checkpoint (--kernels_only).
#pragma once

#include <cstdint>
#include <iostream>
#include <vector>

#include "absl/status/status.h"
#include "bench/median.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_handles.h"
#include "common/backend/cuda/kernels/paged_kv.h"
#include "common/model/model_config.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {

constexpr int64_t kBlock = 16;

// Median over `repeats` of fn()'s GPU time on `stream`, in ms (events around each call).
template <typename Fn>
double TimeMs(const CudaStream& stream, int repeats, Fn&& fn) {
  CudaEvent start = *CudaEvent::Create(), stop = *CudaEvent::Create();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    start.Record(stream.get());
    fn();
    stop.Record(stream.get());
    stop.Synchronize();
    times.push_back(stop.ElapsedMsSince(start));
  }
  return Median(times);
}

// n bf16 values in [-1, 1] (never 0), from a fixed LCG: the same operands every run.
std::vector<uint16_t> RandomBf16(size_t n, uint64_t seed);

struct Sequences {
  std::vector<std::vector<int32_t>> tables;  // per sequence, contiguous blocks
  std::vector<std::vector<int32_t>> tokens;  // random prompt ids
};

// Per launch: `launches` back-to-back calls of issue(i) captured in one CUDA graph, as the
// runner's decode steps run them (no host launch latency in the time); median of 5 replays.
template <typename Issue>
double GraphUs(const CudaStream& stream, int launches, Issue&& issue) {
  absl::StatusOr<CudaGraphExec> graph = CudaGraphExec::Capture(stream.get(), [&] {
    for (int i = 0; i < launches; ++i) {
      absl::Status status = issue(i);
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  });
  if (!graph.ok()) {
    std::cerr << "graph: " << graph.status() << "\n";
    return NAN;
  }
  auto replay = [&] { TANDEM_CUDA_CHECK(cudaGraphLaunch(graph->get(), stream.get())); };
  TimeMs(stream, 1, replay);
  return TimeMs(stream, 5, replay) * 1e3 / launches;
}

// Decode attention of one layer over `context` tokens of the first `batch` sequences for batch
// 1, 8, 64 (and all of them): one launch timed with events (as milestone 2 measured it,
// launch latency included) and in a graph cycling over the layers' caches, so that no launch
// finds its KV in L2 ("rows"); at batch 1 and 8 also every power-of-two split count
// ("splits").
nlohmann::json DecodeAttentionBench(const ModelConfig& c, const std::vector<PagedKvCache>& layers,
                                    const Sequences& seqs, int32_t context,
                                    const CudaStream& stream, double copy_bw);

// cuBLASLt and the GEMV at the decode shapes of one layer and the LM head, with the runner's
// epilogues (bf16 qkv and gate_up, fp32 accumulate into the residual for o and down, fp32 LM
// head), random weights and activations. Each product is timed as one launch with events
// (milestone 2's numbers) and back to back in a graph over enough copies of the weights
// (>= 256 MB) that none is read from L2; at m = 1 every GEMV tiling, in a graph.
nlohmann::json GemvBench(const ModelConfig& c, const CudaStream& stream, double copy_bw);

// --kernels_only: the decode kernels on the Llama-3-8B shape without a checkpoint: decode
// attention over 4 layers' worth of random paged KV (64 sequences x 2048 tokens, contiguous
// blocks) and the GEMV/cuBLASLt decode shapes.
nlohmann::json DecodeKernelsOnly(const CudaStream& stream, double copy_bw);

}  // namespace tandem::bench
