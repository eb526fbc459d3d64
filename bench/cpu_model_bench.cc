// CPU backend benchmark: prefill and decode throughput on a ~100M-parameter random
// Llama-shaped model, against this machine's measured GEMM and memory-copy ceilings, and
// peak resident memory against weights + KV pool. Prints one JSON object.
//
//   build/bench/cpu_model_bench [--threads=N]
#include <cblas.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <random>

#include "bench/median.h"
#include "bench/random_model.h"
#include "common/backend/cpu/cpu_model_runner.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

constexpr int64_t kBlock = 16;

double Seconds(auto&& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Best-effort ceilings measured in this run.
nlohmann::json Ceilings() {
  const int n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  auto gemm = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  };
  gemm();
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) t.push_back(Seconds(gemm));
  double gflops = 2.0 * n * n * n / Median(t) / 1e9;
  std::vector<char> src(256 << 20, 1), dst(256 << 20);
  std::memcpy(dst.data(), src.data(), src.size());
  t.clear();
  for (int i = 0; i < 5; ++i) t.push_back(Seconds([&] { std::memcpy(dst.data(), src.data(), src.size()); }));
  double gbps = 2.0 * src.size() / Median(t) / 1e9;  // bytes read + written
  return {{"sgemm_gflops", gflops}, {"memcpy_gb_per_s", gbps}};
}

// One sequence per entry; each decodes `steps` tokens after a prefill of `context` tokens.
struct Batch {
  std::vector<std::vector<int32_t>> tables;
  std::vector<int32_t> lengths;
};

struct InputStorage {
  std::vector<int32_t> tokens, positions, slots, starts, rows;
};

// Inputs for the next chunk of every sequence; the spans point into `storage`.
ForwardInputs BuildInputs(const Batch& b, std::span<const int32_t> chunk_lens,
                          InputStorage& storage) {
  storage = {};
  auto& [tokens, positions, slots, starts, rows] = storage;
  starts.push_back(0);
  for (size_t s = 0; s < b.tables.size(); ++s) {
    for (int32_t i = 0; i < chunk_lens[s]; ++i) {
      int32_t pos = b.lengths[s] + i;
      tokens.push_back((pos * 7919 + static_cast<int32_t>(s) * 104729) % 32000);
      positions.push_back(pos);
      slots.push_back(b.tables[s][pos / kBlock] * kBlock + pos % kBlock);
    }
    starts.push_back(static_cast<int32_t>(tokens.size()));
    rows.push_back(static_cast<int32_t>(tokens.size()) - 1);
  }
  ForwardInputs in{.token_ids = tokens, .positions = positions, .slot_mapping = slots,
                   .query_start = starts, .block_tables = {}, .logits_rows = rows};
  for (const auto& t : b.tables) in.block_tables.emplace_back(t);
  return in;
}

Batch NewBatch(int num_seqs, int64_t max_len) {
  Batch b;
  int32_t next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    std::vector<int32_t>& t = b.tables.emplace_back((max_len + kBlock - 1) / kBlock);
    std::iota(t.begin(), t.end(), next);
    next += static_cast<int32_t>(t.size());
    b.lengths.push_back(0);
  }
  return b;
}

nlohmann::json Prefill(CpuModelRunner& runner, int32_t len, double gflops_ceiling,
                       int64_t flops_per_token) {
  std::vector<double> t;
  for (int rep = 0; rep < 3; ++rep) {
    Batch b = NewBatch(1, len);
    InputStorage storage;
    ForwardInputs in = BuildInputs(b, std::vector<int32_t>{len}, storage);
    t.push_back(Seconds([&] { (void)runner.Forward(in); }));
  }
  double s = Median(t);
  double gflops = static_cast<double>(flops_per_token) * len / s / 1e9;
  return {{"prompt_tokens", len}, {"seconds", s}, {"tokens_per_s", len / s},
          {"gflops", gflops}, {"fraction_of_sgemm_ceiling", gflops / gflops_ceiling}};
}

nlohmann::json Decode(CpuModelRunner& runner, int num_seqs, int32_t context, int steps,
                      double gbps_ceiling) {
  Batch b = NewBatch(num_seqs, context + steps);
  InputStorage storage;
  std::vector<int32_t> one(num_seqs, 1);
  for (int s = 0; s < num_seqs; ++s) {  // one prompt per step, as an engine's token budget would
    Batch single{.tables = {b.tables[s]}, .lengths = {0}};
    std::vector<int32_t> len = {context};
    (void)runner.Forward(BuildInputs(single, len, storage));
  }
  for (int32_t& l : b.lengths) l = context;
  std::vector<double> t;
  for (int step = 0; step < steps; ++step) {
    ForwardInputs in = BuildInputs(b, one, storage);
    t.push_back(Seconds([&] { (void)runner.Forward(in); }));
    for (int32_t& l : b.lengths) ++l;
  }
  double s = Median(t);
  double bytes = static_cast<double>(runner.weight_bytes());  // weights read once per step
  return {{"batch", num_seqs}, {"context_tokens", context}, {"step_seconds", s},
          {"tokens_per_s", num_seqs / s}, {"weight_gb_per_s", bytes / s / 1e9},
          {"fraction_of_memcpy_ceiling", bytes / s / 1e9 / gbps_ceiling}};
}

int Main(int argc, char** argv) {
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) threads = std::atoi(argv[i] + 10);
  }
  RandomModelShape shape;
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("tandem-bench-" + std::to_string(::getpid()))).string();
  if (absl::Status s = WriteRandomModel(shape, dir, 7); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  const int64_t kv_blocks = 8 * (640 / kBlock);
  auto runner = CpuModelRunner::Load(dir, {.num_kv_blocks = kv_blocks, .block_size_tokens = kBlock,
                                           .num_threads = threads});
  std::filesystem::remove_all(dir);  // the mapping keeps the data alive
  if (!runner.ok()) {
    std::cerr << runner.status() << "\n";
    return 1;
  }
  // Ceilings are measured after the memory reading (their buffers would inflate peak RSS);
  // the fractions are filled in at the end. Prefill FLOPs count the GEMMs, not attention.
  nlohmann::json ceilings = {{"sgemm_gflops", 1.0}, {"memcpy_gb_per_s", 1.0}};
  int64_t flops_per_token = 2 * (shape.NumParameters() - shape.vocab_size * shape.hidden_size);
  nlohmann::json out = {{"benchmark", "cpu_model"}, {"parameters", shape.NumParameters()},
                        {"threads", threads}, {"ceilings", ceilings}};
  for (int32_t len : {128, 512}) {
    out["prefill"].push_back(Prefill(**runner, len, ceilings["sgemm_gflops"], flops_per_token));
  }
  for (int batch : {1, 8}) {
    out["decode"].push_back(Decode(**runner, batch, 128, 16, ceilings["memcpy_gb_per_s"]));
  }
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  double peak = usage.ru_maxrss * 1024.0;
  double budget = static_cast<double>((*runner)->weight_bytes() + (*runner)->kv_pool_bytes());
  out["memory"] = {{"peak_rss_bytes", peak}, {"weight_bytes", (*runner)->weight_bytes()},
                   {"kv_pool_bytes", (*runner)->kv_pool_bytes()},
                   {"peak_over_weights_plus_kv", peak / budget}, {"target", 1.1}};
  ceilings = Ceilings();
  out["ceilings"] = ceilings;
  for (auto& p : out["prefill"]) {
    p["fraction_of_sgemm_ceiling"] = p["gflops"].get<double>() / ceilings["sgemm_gflops"].get<double>();
  }
  for (auto& d : out["decode"]) {
    d["fraction_of_memcpy_ceiling"] =
        d["weight_gb_per_s"].get<double>() / ceilings["memcpy_gb_per_s"].get<double>();
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) { return tandem::bench::Main(argc, argv); }
