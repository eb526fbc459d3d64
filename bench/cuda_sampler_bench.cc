// GPU sampler benchmark: CudaSampler::Sample per batch (host wall time: parameter upload,
// the kernels, the results download and the synchronization) at vocab 128256 and batch
// 1/8/64/256, beside what it replaces: copying the logits to the host (measured here, with
// its bytes/s next to the device copy bandwidth measured in the same run) and SampleBatch
// on the CPU. Prints one JSON object.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "bench/median.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_handles.h"
#include "common/backend/cuda/cuda_sampler.h"
#include "common/sampling/sampler.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

constexpr int32_t kVocab = 128256;

using bench::Median;

template <typename F>
double HostMs(int iterations, F f) {
  std::vector<double> times;
  for (int i = 0; i < iterations; ++i) {
    auto start = std::chrono::steady_clock::now();
    f();
    times.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return Median(times);
}

// Device-to-device copy bandwidth (bytes read + written), events around 10 copies of 1 GiB.
double CopyGbPerS(const CudaStream& stream) {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer src = *DeviceBuffer::Allocate(bytes), dst = *DeviceBuffer::Allocate(bytes);
  TANDEM_CUDA_CHECK(cudaMemset(src.data(), 0x3c, bytes));
  CudaEvent start = *CudaEvent::Create(), stop = *CudaEvent::Create();
  std::vector<double> times;
  for (int i = 0; i < 12; ++i) {
    start.Record(stream.get());
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice,
                                      stream.get()));
    stop.Record(stream.get());
    stop.Synchronize();
    if (i >= 2) times.push_back(stop.ElapsedMsSince(start));
  }
  return 2.0 * bytes / (Median(times) * 1e-3) / 1e9;
}

struct Config {
  std::string name;
  SamplingParams params;
};

std::vector<Config> Configs() {
  std::vector<Config> out;
  SamplingParams p;
  p.temperature = 0.0f;
  out.push_back({"greedy", p});
  p = {};
  p.temperature = 0.8f;
  out.push_back({"temperature", p});
  p.top_p = 0.9f;
  out.push_back({"top_p0.9", p});
  p = {};
  p.temperature = 0.8f;
  p.top_k = 50;
  p.top_p = 0.9f;
  p.min_p = 0.05f;
  p.logprobs = 5;
  p.repetition_penalty = 1.1f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.5f;
  out.push_back({"full(top_k50+top_p0.9+min_p+logprobs5+penalties)", p});
  return out;
}

nlohmann::json BenchBatch(int32_t batch, const CudaStream& stream, double copy_bw) {
  std::mt19937 rng(batch);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const size_t values = size_t{static_cast<size_t>(batch)} * kVocab;
  std::vector<float> host(values);
  for (float& v : host) v = normal(rng);
  DeviceBuffer original = *DeviceBuffer::Allocate(values * sizeof(float));
  DeviceBuffer logits = *DeviceBuffer::Allocate(values * sizeof(float));
  TANDEM_CUDA_CHECK(cudaMemcpy(original.data(), host.data(), values * sizeof(float),
                               cudaMemcpyHostToDevice));
  PinnedBuffer pinned = *PinnedBuffer::Allocate(values * sizeof(float));

  nlohmann::json out{{"batch", batch}, {"vocab", kVocab}};
  const double bytes = static_cast<double>(values * sizeof(float));
  const double copy_ms = HostMs(10, [&] {
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(pinned.data(), original.data(), values * sizeof(float),
                                      cudaMemcpyDeviceToHost, stream.get()));
    stream.Synchronize();
  });
  out["logits_to_host_ms"] = copy_ms;
  out["logits_to_host_gb_per_s"] = bytes / (copy_ms * 1e-3) / 1e9;
  out["logits_to_host_fraction_of_device_copy"] = bytes / (copy_ms * 1e-3) / copy_bw;

  auto sampler = *CudaSampler::Create({.vocab_size = kVocab, .max_num_rows = batch});
  std::vector<SequenceSamplingState> states;
  for (int32_t r = 0; r < batch; ++r) {
    std::vector<int32_t> prompt(512);
    for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % kVocab);
    states.push_back(MakeSequenceState(prompt, rng()));
    for (int i = 0; i < 128; ++i) AppendToken(states.back(), static_cast<int32_t>(rng() % kVocab));
  }
  SamplingContext ctx{.vocab_size = kVocab};
  for (const Config& c : Configs()) {
    std::vector<SamplingRow> rows;
    for (int32_t r = 0; r < batch; ++r) rows.push_back({&c.params, &states[r]});
    auto restore = [&] {
      TANDEM_CUDA_CHECK(cudaMemcpyAsync(logits.data(), original.data(), values * sizeof(float),
                                        cudaMemcpyDeviceToDevice, stream.get()));
    };
    auto sample = [&] {
      auto got = sampler->Sample({logits.as<float>(), kVocab}, ctx, rows, stream.get());
      if (!got.ok()) {
        std::cerr << got.status() << "\n";
        std::exit(1);
      }
    };
    // Warm-up, then the median of 20 (the restore copy runs before each, outside the timing).
    restore();
    sample();
    std::vector<double> times;
    for (int i = 0; i < 20; ++i) {
      restore();
      stream.Synchronize();
      times.push_back(HostMs(1, sample));
    }
    const double gpu_ms = Median(times);
    // The CPU stack on the same rows (fewer iterations: it is slow at this vocabulary).
    std::vector<float> cpu_logits = host;
    const int cpu_iterations = batch <= 8 ? 3 : 1;
    const double cpu_ms = batch <= 64 ? HostMs(cpu_iterations, [&] {
      cpu_logits = host;
      SampleBatch(cpu_logits, ctx, rows);
    }) : -1.0;
    out["configs"].push_back({{"config", c.name},
                              {"gpu_sample_ms", gpu_ms},
                              {"gpu_sample_vs_logits_copy", gpu_ms / copy_ms},
                              {"cpu_sample_batch_ms", cpu_ms},
                              {"fallback_rows", sampler->last_num_fallback_rows()}});
  }
  return out;
}

}  // namespace
}  // namespace tandem

int main() {
  using namespace tandem;
  CudaStream stream = *CudaStream::Create();
  cudaDeviceProp prop;
  TANDEM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double copy_gb = CopyGbPerS(stream);
  nlohmann::json out{{"device", prop.name}, {"device_copy_gb_per_s", copy_gb}};
  for (int32_t batch : {1, 8, 64, 256}) out["batches"].push_back(BenchBatch(batch, stream, copy_gb * 1e9));
  std::cout << out.dump(2) << std::endl;
  return 0;
}
