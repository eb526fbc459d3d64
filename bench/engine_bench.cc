// Engine benchmark on the CPU: N concurrent requests with random prompt and output lengths
// through the colocated engine, against the same requests one at a time. Prints JSON with
// tokens/s of both and the batching speed-up. Uses a random ~25M-parameter Llama-shaped
// model it writes itself.
//
//   build/bench/engine_bench [--requests=N] [--threads=N]
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <random>

#include "bench/random_model.h"
#include "common/backend/cpu/cpu_model_runner.h"
#include "common/engine/engine.h"
#include "common/engine/output_queue.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

struct Workload {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> max_tokens;
};

Workload MakeWorkload(int n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  Workload w;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t>& p = w.prompts.emplace_back(16 + rng() % 112);
    for (int32_t& t : p) t = static_cast<int32_t>(rng() % vocab);
    w.max_tokens.push_back(16 + static_cast<int32_t>(rng() % 48));
  }
  return w;
}

// Runs the requests [begin, end) concurrently and waits for all; returns generated tokens.
int64_t Run(Engine& engine, const Workload& w, int begin, int end) {
  std::vector<std::shared_ptr<OutputQueue>> queues;
  for (int i = begin; i < end; ++i) {
    auto q = std::make_shared<OutputQueue>();
    queues.push_back(q);
    EngineRequest r{.request_id = "r" + std::to_string(i), .prompt_ids = w.prompts[i],
                    .seed = static_cast<uint64_t>(i), .sink = q};
    r.params.temperature = 0.0f;
    r.params.max_tokens = w.max_tokens[i];
    r.params.ignore_eos = true;
    if (!engine.AddRequest(r).ok()) std::abort();
  }
  int64_t tokens = 0;
  for (auto& q : queues) {
    while (true) {
      std::optional<EngineOutput> o = q->Pop(absl::Now() + absl::Minutes(5));
      if (!o) std::abort();
      tokens += static_cast<int64_t>(o->token_ids.size());
      if (o->finish != OutputFinish::kNone) break;
    }
  }
  return tokens;
}

double Seconds(auto&& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int Main(int argc, char** argv) {
  int requests = 32, threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--requests=", 11) == 0) requests = std::atoi(argv[i] + 11);
    if (std::strncmp(argv[i], "--threads=", 10) == 0) threads = std::atoi(argv[i] + 10);
  }
  RandomModelShape shape{.vocab_size = 8192, .hidden_size = 512, .intermediate_size = 1536,
                         .num_layers = 6, .num_heads = 8, .num_kv_heads = 2, .head_dim = 64,
                         .max_position_embeddings = 2048};
  std::string dir = (std::filesystem::temp_directory_path() /
                     ("tandem-engine-bench-" + std::to_string(::getpid()))).string();
  if (!WriteRandomModel(shape, dir, 11).ok()) return 1;
  auto runner = CpuModelRunner::Load(dir, {.num_kv_blocks = 2048, .block_size_tokens = 16,
                                           .num_threads = threads});
  std::filesystem::remove_all(dir);
  if (!runner.ok()) {
    std::cerr << runner.status() << "\n";
    return 1;
  }
  // Any tokenizer serves: outputs are detokenized for stop handling, never compared.
  auto tokenizer = Tokenizer::Load(TANDEM_DEFAULT_MODEL_DIR);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  Engine engine({.role = EngineRole::kColocated,
                 .scheduler = {.max_num_seqs = 64, .max_num_batched_tokens = 1024}},
                std::move(*runner), std::shared_ptr<const Tokenizer>(std::move(*tokenizer)));
  engine.Start();
  Workload w = MakeWorkload(requests, shape.vocab_size, 5);
  int64_t batched_tokens = 0, serial_tokens = 0;
  double batched_s = Seconds([&] { batched_tokens = Run(engine, w, 0, requests); });
  double serial_s = Seconds([&] {
    for (int i = 0; i < requests; ++i) serial_tokens += Run(engine, w, i, i + 1);
  });
  EngineStats stats = engine.stats();
  engine.Stop();
  nlohmann::json out = {
      {"benchmark", "engine_cpu"}, {"parameters", shape.NumParameters()}, {"requests", requests},
      {"generated_tokens", batched_tokens},
      {"batched", {{"seconds", batched_s}, {"output_tokens_per_s", batched_tokens / batched_s}}},
      {"one_at_a_time",
       {{"seconds", serial_s}, {"output_tokens_per_s", serial_tokens / serial_s}}},
      {"batching_speedup", serial_s / batched_s},
      {"engine", {{"steps", stats.num_steps}, {"preemptions", stats.num_preemptions},
                  {"computed_tokens", stats.num_computed_tokens}}}};
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) { return tandem::bench::Main(argc, argv); }
