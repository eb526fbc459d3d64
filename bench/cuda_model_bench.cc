// CUDA backend benchmark on a Llama-shaped checkpoint (tools/make_random_llama8b.py writes
// the 8B shape): decode tokens/s at several batch sizes and contexts, prefill time, each
// with its fraction of the roofline built from ceilings measured in the same run (device
// copy bandwidth, cuBLASLt bf16 GEMM rate). Prints one JSON object.
//
// Decode steps run as the runner runs them (CUDA graphs, GEMV for batch <= 8); the
// "decode_attribution" rows switch one of those off to show what it is worth.
//
//   cuda_model_bench --model=/tmp/llama8b [--decode_steps=16] [--max_batch=256]
//   cuda_model_bench --kernels_only   # decode attention + GEMV on the 8B shape, no checkpoint
//   ncu --profile-from-start off ... cuda_model_bench --model=DIR --profile_passes  # one 2k
//       prefill and one batch-64 step's kernels in sequence
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <cuda_profiler_api.h>

#include "bench/cuda_bench_common.h"
#include "bench/median.h"
#include "common/backend/cuda/bf16_host.h"
#include "common/backend/cuda/cublaslt_gemm.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_model_runner.h"
#include "common/backend/cuda/kernels/add_rms_norm.h"
#include "common/backend/cuda/kernels/decode_attention.h"
#include "common/backend/cuda/kernels/gemv.h"
#include "common/backend/cuda/kernels/prefill_attention.h"
#include "common/backend/cuda/kernels/rope_kv_write.h"
#include "common/backend/cuda/kernels/silu_mul.h"
#include "common/backend/cuda/kernels/skinny_gemm.h"
#include "common/kv_cache/kv_layer_progress.h"
#include "common/sampling/sequence_state.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

// Device copy (bytes read + written) and 8192^3 bf16 GEMM on random data.
nlohmann::json MeasureCeilings(const CudaStream& stream) {
  const size_t copy_bytes = size_t{2} << 30;
  DeviceBuffer src = *DeviceBuffer::Allocate(copy_bytes), dst = *DeviceBuffer::Allocate(copy_bytes);
  TANDEM_CUDA_CHECK(cudaMemset(src.data(), 0x3c, copy_bytes));
  auto copy = [&] {
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), copy_bytes,
                                      cudaMemcpyDeviceToDevice, stream.get()));
  };
  TimeMs(stream, 3, copy);
  const double copy_ms = TimeMs(stream, 10, copy);

  const int64_t n = 8192;
  std::vector<uint16_t> a = RandomBf16(n * n, 1), b = RandomBf16(n * n, 2);
  DeviceBuffer d_a = *DeviceBuffer::Allocate(n * n * 2), d_b = *DeviceBuffer::Allocate(n * n * 2),
               d_c = *DeviceBuffer::Allocate(n * n * 2);
  TANDEM_CUDA_CHECK(cudaMemcpy(d_a.data(), a.data(), n * n * 2, cudaMemcpyHostToDevice));
  TANDEM_CUDA_CHECK(cudaMemcpy(d_b.data(), b.data(), n * n * 2, cudaMemcpyHostToDevice));
  std::unique_ptr<CublasLtGemm> gemm = *CublasLtGemm::Create();
  auto matmul = [&] {
    absl::Status status = gemm->MatMulTransposed(
        {.a = d_a.as<__nv_bfloat16>(), .w = d_b.as<__nv_bfloat16>(), .out = d_c.data(),
         .m = n, .n = n, .k = n, .output = GemmOutput::kBF16},
        stream.get());
    if (!status.ok()) std::cerr << status << "\n";
  };
  TimeMs(stream, 3, matmul);
  const double gemm_ms = TimeMs(stream, 10, matmul);
  // The same GEMM 36 times back to back (~50 ms, a 2k prefill's length): under sustained
  // load the clocks may settle lower than for one GEMM after an idle moment.
  const double sustained_ms = TimeMs(stream, 3, [&] {
    for (int i = 0; i < 36; ++i) matmul();
  }) / 36;
  return {{"copy_gb_per_s", 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9},
          {"gemm_bf16_tflops", 2.0 * n * n * n / (gemm_ms * 1e-3) / 1e12},
          {"gemm_bf16_tflops_sustained_50ms", 2.0 * n * n * n / (sustained_ms * 1e-3) / 1e12},
          {"gemm_shape", "8192x8192x8192"}};
}

// The arrays a ForwardInputs points into.
struct BatchStorage {
  std::vector<int32_t> ids, positions, slots, query_start, logits_rows;
};

// num_tokens tokens of each sequence in [first_seq, first_seq + num_seqs), from
// first_position; logits for each sequence's last token when last_logits_only, else none.
ForwardInputs MakeInputs(const Sequences& seqs, int64_t first_seq, int64_t num_seqs,
                         int32_t first_position, int32_t num_tokens, bool last_logits_only,
                         BatchStorage& storage) {
  storage = BatchStorage();
  auto& [ids, positions, slots, query_start, logits_rows] = storage;
  ForwardInputs in;
  query_start.push_back(0);
  for (int64_t s = first_seq; s < first_seq + num_seqs; ++s) {
    for (int32_t i = 0; i < num_tokens; ++i) {
      int32_t pos = first_position + i;
      ids.push_back(seqs.tokens[s][pos % seqs.tokens[s].size()]);
      positions.push_back(pos);
      slots.push_back(seqs.tables[s][pos / kBlock] * kBlock + pos % kBlock);
    }
    query_start.push_back(static_cast<int32_t>(ids.size()));
    logits_rows.push_back(static_cast<int32_t>(ids.size()) - 1);
    in.block_tables.emplace_back(seqs.tables[s]);
  }
  if (!last_logits_only) logits_rows.clear();
  in.token_ids = ids;
  in.positions = positions;
  in.slot_mapping = slots;
  in.query_start = query_start;
  in.logits_rows = logits_rows;
  return in;
}

double WallMs(auto&& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

void Check(const absl::Status& status) {
  if (!status.ok()) {
    std::cerr << "forward or sampling failed: " << status << "\n";
    std::exit(1);
  }
}

template <typename T>
void Check(const absl::StatusOr<T>& result) {
  Check(result.status());
}

// Kernel-level numbers that explain the model-level ones: the attention kernels over the
// runner's filled KV and the decode-shape GEMMs, against the ceilings.
nlohmann::json KernelBreakdown(CudaModelRunner& runner, const Sequences& seqs, int32_t context,
                               const CudaStream& stream, double copy_bw, double gemm_rate) {
  const ModelConfig& c = runner.config();
  nlohmann::json out;
  const int32_t max_blocks = static_cast<int32_t>(seqs.tables[0].size());
  std::vector<PagedKvCache> layers;
  for (int64_t l = 0; l < c.num_layers; ++l) layers.push_back(runner.layer_kv(l));
  nlohmann::json attention = DecodeAttentionBench(c, layers, seqs, context, stream, copy_bw);
  out["decode_attention"] = attention["rows"];
  out["decode_attention_splits"] = attention["splits"];
  std::vector<int32_t> query_start{0, context}, positions;
  for (int32_t i = 0; i < context; ++i) positions.push_back(i);
  auto upload = [](const std::vector<int32_t>& v) {
    DeviceBuffer b = *DeviceBuffer::Allocate(v.size() * 4);
    TANDEM_CUDA_CHECK(cudaMemcpy(b.data(), v.data(), v.size() * 4, cudaMemcpyHostToDevice));
    return b;
  };
  DeviceBuffer d_tables = upload(seqs.tables[0]), d_query_start = upload(query_start),
               d_positions = upload(positions);
  const size_t q_bytes = static_cast<size_t>(context) * c.num_heads * c.head_dim * 2;
  DeviceBuffer q = *DeviceBuffer::Allocate(q_bytes), o = *DeviceBuffer::Allocate(q_bytes);
  TANDEM_CUDA_CHECK(cudaMemset(q.data(), 0x3c, q_bytes));
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<int32_t> tiles = BuildPrefillTiles(query_start.data(), 1,
                                                 static_cast<int32_t>(c.num_heads / c.num_kv_heads));
  DeviceBuffer d_tiles = upload(tiles);
  double prefill_ms = TimeMs(stream, 5, [&] {
    absl::Status status = LaunchPrefillAttention(
        {.q = q.as<__nv_bfloat16>(), .out = o.as<__nv_bfloat16>(),
         .positions = d_positions.as<int32_t>(), .query_start = d_query_start.as<int32_t>(),
         .block_tables = d_tables.as<int32_t>(), .tiles = d_tiles.as<int32_t>(),
         .num_tiles = static_cast<int32_t>(tiles.size() / 2),
         .num_heads = static_cast<int32_t>(c.num_heads), .max_blocks_per_seq = max_blocks,
         .scale = scale, .cache = runner.layer_kv(0)},
        stream.get());
    if (!status.ok()) std::cerr << status << "\n";
  });
  const double flops = 4.0 * c.head_dim * c.num_heads * context * (context + 1) / 2.0;
  out["prefill_attention_one_layer"] = {{"tokens", context}, {"ms", prefill_ms},
                                        {"tflops", flops / (prefill_ms * 1e-3) / 1e12},
                                        {"fraction_of_gemm_rate", flops / gemm_rate / (prefill_ms * 1e-3)}};
  out.update(GemvBench(c, stream, copy_bw));
  return out;
}

// The memory-bound kernels of one layer at prefill sizes, on random operands (slices of
// a, w, d): both RMSNorms (fp32 residual in, bf16 out), RoPE + KV write into layer 0 at the
// prompt's slots, SiLU·mul; bytes are each input read and each output written once.
nlohmann::json OtherPrefillKernels(CudaModelRunner& runner, const Sequences& prompt,
                                   const DeviceBuffer& a, const DeviceBuffer& w,
                                   const DeviceBuffer& d, const CudaStream& stream) {
  const ModelConfig& c = runner.config();
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  const int64_t qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  std::vector<float> inv_freq(c.head_dim / 2);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    inv_freq[i] =
        std::pow(500000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(c.head_dim));
  }
  DeviceBuffer d_inv_freq = *DeviceBuffer::Allocate(inv_freq.size() * 4);
  TANDEM_CUDA_CHECK(
      cudaMemcpy(d_inv_freq.data(), inv_freq.data(), inv_freq.size() * 4, cudaMemcpyHostToDevice));
  nlohmann::json out;
  for (int64_t m : {int64_t{2048}, int64_t{8192}}) {
    std::vector<int32_t> positions(m), slots(m);
    for (int32_t p = 0; p < m; ++p) {
      positions[p] = p;
      slots[p] = prompt.tables[0][p / kBlock] * kBlock + p % kBlock;
    }
    DeviceBuffer d_positions = *DeviceBuffer::Allocate(m * 4),
                 d_slots = *DeviceBuffer::Allocate(m * 4);
    TANDEM_CUDA_CHECK(
        cudaMemcpy(d_positions.data(), positions.data(), m * 4, cudaMemcpyHostToDevice));
    TANDEM_CUDA_CHECK(cudaMemcpy(d_slots.data(), slots.data(), m * 4, cudaMemcpyHostToDevice));
    double layer_ms = 0;
    auto time = [&](const char* name, double bytes, auto&& launch) {
      auto run = [&] {
        absl::Status status = launch();
        if (!status.ok()) std::cerr << name << ": " << status << "\n";
      };
      TimeMs(stream, 2, run);
      const double ms = TimeMs(stream, 10, run);
      layer_ms += ms;
      out["kernels"].push_back(
          {{"name", name}, {"m", m}, {"ms", ms}, {"gb_per_s", bytes / (ms * 1e-3) / 1e9}});
    };
    const auto* bf16_a = a.as<__nv_bfloat16>();
    auto* bf16_d = d.as<__nv_bfloat16>();
    for (const char* name : {"input_rms_norm", "post_attention_rms_norm"}) {
      time(name, m * h * 6.0, [&] {
        return LaunchAddRmsNorm({.residual = a.as<float>(),
                                 .x = nullptr,
                                 .weight = w.as<__nv_bfloat16>(),
                                 .out = bf16_d,
                                 .num_rows = m,
                                 .dim = h,
                                 .eps = 1e-5f},
                                stream.get());
      });
    }
    time("rope_kv_write",
         m * (qkv + c.num_heads * c.head_dim + 2 * c.num_kv_heads * c.head_dim) * 2.0, [&] {
           return LaunchRopeKvWrite({.qkv = bf16_a,
                                     .q_out = bf16_d,
                                     .positions = d_positions.as<int32_t>(),
                                     .slot_mapping = d_slots.as<int32_t>(),
                                     .inv_freq = d_inv_freq.as<float>(),
                                     .num_tokens = m,
                                     .num_heads = static_cast<int32_t>(c.num_heads),
                                     .cache = runner.layer_kv(0)},
                                    stream.get());
         });
    time("silu_mul", m * inter * 6.0, [&] {
      return LaunchSiluMul({.gate_up = bf16_a, .out = bf16_d, .num_rows = m, .dim = inter},
                           stream.get());
    });
    out["layer"].push_back(
        {{"m", m}, {"ms", layer_ms}, {"all_layers_ms", layer_ms * c.num_layers}});
  }
  return out;
}

// What a prefill is made of, at the kernel level: the prefill attention of one layer over
// the prompt's KV (layer 0, written by the prefill runs) for every block shape of the kernel,
// and the four per-layer GEMMs at prefill sizes with the heuristic's first algorithm and with
// the timed choice (random bf16 operands; bf16 output for qkv and gate_up, fp32 accumulate
// for o and down, as in the runner).
nlohmann::json PrefillBreakdown(CudaModelRunner& runner, const Sequences& prompt,
                                const CudaStream& stream, double gemm_rate) {
  const ModelConfig& c = runner.config();
  nlohmann::json out;
  const int32_t group = static_cast<int32_t>(c.num_heads / c.num_kv_heads);
  const int32_t max_blocks = static_cast<int32_t>(prompt.tables[0].size());
  auto upload = [](const std::vector<int32_t>& v) {
    DeviceBuffer b = *DeviceBuffer::Allocate(v.size() * 4);
    TANDEM_CUDA_CHECK(cudaMemcpy(b.data(), v.data(), v.size() * 4, cudaMemcpyHostToDevice));
    return b;
  };
  DeviceBuffer d_table = upload(prompt.tables[0]);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  for (int32_t tokens : {512, 2048, 8192}) {
    std::vector<int32_t> positions(tokens), query_start{0, tokens};
    std::iota(positions.begin(), positions.end(), 0);
    DeviceBuffer d_positions = upload(positions), d_query_start = upload(query_start);
    const size_t q_elements = static_cast<size_t>(tokens) * c.num_heads * c.head_dim;
    std::vector<uint16_t> q_host = RandomBf16(q_elements, 11);
    DeviceBuffer q = *DeviceBuffer::Allocate(q_elements * 2),
                 o = *DeviceBuffer::Allocate(q_elements * 2);
    TANDEM_CUDA_CHECK(cudaMemcpy(q.data(), q_host.data(), q_elements * 2, cudaMemcpyHostToDevice));
    for (auto [tiling, name] : {std::tuple{PrefillTiling::kRows64Warps4, "rows64_warps4"},
                                {PrefillTiling::kRows128Warps4, "rows128_warps4"},
                                {PrefillTiling::kRows128Wgmma, "rows128_wgmma"}}) {
      std::vector<int32_t> tiles =
          BuildPrefillTiles(query_start.data(), 1, group, PrefillRowsPerTile(tiling));
      DeviceBuffer d_tiles = upload(tiles);
      auto run = [&] {
        absl::Status status =
            LaunchPrefillAttention({.q = q.as<__nv_bfloat16>(),
                                    .out = o.as<__nv_bfloat16>(),
                                    .positions = d_positions.as<int32_t>(),
                                    .query_start = d_query_start.as<int32_t>(),
                                    .block_tables = d_table.as<int32_t>(),
                                    .tiles = d_tiles.as<int32_t>(),
                                    .num_tiles = static_cast<int32_t>(tiles.size() / 2),
                                    .num_heads = static_cast<int32_t>(c.num_heads),
                                    .max_blocks_per_seq = max_blocks,
                                    .scale = scale,
                                    .cache = runner.layer_kv(0),
                                    .tiling = tiling},
                                   stream.get());
        if (!status.ok()) std::cerr << status << "\n";
      };
      TimeMs(stream, 2, run);
      const double ms = TimeMs(stream, 10, run);
      const double flops = 4.0 * c.head_dim * c.num_heads * tokens * (tokens + 1) / 2.0;
      out["attention"].push_back({{"tokens", tokens},
                                  {"tiling", name},
                                  {"default", tiling == kDefaultPrefillTiling},
                                  {"ms", ms},
                                  {"tflops", flops / (ms * 1e-3) / 1e12},
                                  {"fraction_of_gemm_rate", flops / gemm_rate / (ms * 1e-3)}});
    }
  }
  // GEMMs: one random buffer serves every operand (slices of it).
  const int64_t h = c.hidden_size, qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  const int64_t inter = c.intermediate_size, max_m = 8192;
  const size_t operand_elements =
      static_cast<size_t>(std::max(max_m, 2 * inter) * std::max(h, inter));
  std::vector<uint16_t> host = RandomBf16(operand_elements, 5);
  DeviceBuffer a = *DeviceBuffer::Allocate(operand_elements * 2),
               w = *DeviceBuffer::Allocate(operand_elements * 2),
               d = *DeviceBuffer::Allocate(static_cast<size_t>(max_m) * 2 * inter * 2);
  TANDEM_CUDA_CHECK(
      cudaMemcpy(a.data(), host.data(), operand_elements * 2, cudaMemcpyHostToDevice));
  TANDEM_CUDA_CHECK(
      cudaMemcpy(w.data(), host.data() + 1, (operand_elements - 1) * 2, cudaMemcpyHostToDevice));
  TANDEM_CUDA_CHECK(cudaMemset(d.data(), 0, d.size_bytes()));  // accumulate adds into it
  out["other_kernels"] = OtherPrefillKernels(runner, prompt, a, w, d, stream);
  for (int algorithms : {1, 16}) {
    std::unique_ptr<CublasLtGemm> gemm = *CublasLtGemm::Create({.max_algorithms = algorithms});
    for (int64_t m : {int64_t{512}, int64_t{2048}, max_m}) {
      double layer_ms = 0;
      for (auto [name, n, k, output] : {std::tuple{"qkv", qkv, h, GemmOutput::kBF16},
                                        {"o", h, c.num_heads * c.head_dim, GemmOutput::kF32},
                                        {"gate_up", 2 * inter, h, GemmOutput::kBF16},
                                        {"down", h, inter, GemmOutput::kF32}}) {
        const GemmArgs args{.a = a.as<__nv_bfloat16>(),
                            .w = w.as<__nv_bfloat16>(),
                            .out = d.data(),
                            .m = m,
                            .n = n,
                            .k = k,
                            .output = output,
                            .accumulate = output == GemmOutput::kF32};
        auto run = [&] {
          absl::Status status = gemm->MatMulTransposed(args, stream.get());
          if (!status.ok()) std::cerr << status << "\n";
        };
        double first_ms = WallMs([&] {
          run();
          stream.Synchronize();
        });
        TimeMs(stream, 2, run);
        const double ms = TimeMs(stream, 10, run);
        layer_ms += ms;
        const double flops = 2.0 * m * n * k;
        out["gemms"].push_back({{"name", name},
                                {"m", m},
                                {"n", n},
                                {"k", k},
                                {"algorithms", algorithms},
                                {"ms", ms},
                                {"first_call_ms", first_ms},
                                {"tflops", flops / (ms * 1e-3) / 1e12},
                                {"fraction_of_gemm_rate", flops / gemm_rate / (ms * 1e-3)}});
      }
      out["gemm_layer_ms"].push_back({{"m", m},
                                      {"algorithms", algorithms},
                                      {"ms", layer_ms},
                                      {"all_layers_ms", layer_ms * c.num_layers}});
    }
  }
  return out;
}

}  // namespace

int Main(int argc, char** argv) {
  std::string model;
  int decode_steps = 16;
  int64_t max_batch = 256;
  bool prefill_only = false;  // skips decode: the prefill numbers and their breakdown only
  bool kernels_only = false;  // no checkpoint: the decode attention and GEMV benchmarks only
  bool decode_only = false;   // the decode steps and their attribution only
  // Brackets one 2k prefill and one batch-64 2k decode step (each after warm-up) with
  // cudaProfilerStart/Stop, for `nsys profile --capture-range=cudaProfilerApi` or
  // `ncu --profile-from-start off`: the kernels of a real pass, in sequence.
  bool profile_passes = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--model=", 0) == 0) model = arg.substr(8);
    if (arg.rfind("--decode_steps=", 0) == 0) decode_steps = std::stoi(arg.substr(15));
    if (arg.rfind("--max_batch=", 0) == 0) max_batch = std::stoll(arg.substr(12));
    if (arg == "--prefill_only") prefill_only = true;
    if (arg == "--kernels_only") kernels_only = true;
    if (arg == "--decode_only") decode_only = true;
    if (arg == "--profile_passes") profile_passes = true;
  }
  if (model.empty() && !kernels_only) {
    std::cerr << "usage: cuda_model_bench --model=DIR [--decode_steps=N] [--max_batch=N] "
                 "[--prefill_only | --decode_only] [--profile_passes] | --kernels_only\n";
    return 2;
  }
  CudaStream stream = *CudaStream::Create();
  nlohmann::json out;
  out["ceilings"] = MeasureCeilings(stream);
  const double copy_bw = out["ceilings"]["copy_gb_per_s"].get<double>() * 1e9;
  if (kernels_only) {
    out["kernels"] = DecodeKernelsOnly(stream, copy_bw);
    std::cout << out.dump(1) << std::endl;
    return 0;
  }
  const double gemm_rate = out["ceilings"]["gemm_bf16_tflops"].get<double>() * 1e12;

  double load_ms = 0;
  absl::StatusOr<std::unique_ptr<CudaModelRunner>> loaded;
  load_ms = WallMs([&] { loaded = CudaModelRunner::Load(model, {}); });
  if (!loaded.ok()) {
    std::cerr << loaded.status() << "\n";
    return 1;
  }
  CudaModelRunner& runner = **loaded;
  const ModelConfig& c = runner.config();
  out["model"] = {{"dir", model}, {"layers", c.num_layers}, {"hidden", c.hidden_size},
                  {"load_ms", load_ms}, {"memory", runner.memory_report().ToString()},
                  {"kv_pool_blocks", runner.num_kv_blocks()}};

  const int64_t max_context = 2048;
  Sequences seqs;
  std::mt19937 rng(7);
  const int64_t blocks_per_seq = (max_context + decode_steps + 8 + kBlock) / kBlock + 1;
  for (int64_t s = 0; s < max_batch; ++s) {
    std::vector<int32_t>& table = seqs.tables.emplace_back(blocks_per_seq);
    for (int64_t b = 0; b < blocks_per_seq; ++b) table[b] = static_cast<int32_t>(s * blocks_per_seq + b);
    std::vector<int32_t>& tokens = seqs.tokens.emplace_back(max_context);
    for (int32_t& t : tokens) t = std::uniform_int_distribution<int32_t>(0, c.vocab_size - 1)(rng);
  }
  BatchStorage storage;

  // Prefill: one sequence (its own blocks, past the decode sequences'), logits for its last
  // token only.
  Sequences prompt;
  prompt.tables.emplace_back(8192 / kBlock);
  for (size_t b = 0; b < prompt.tables[0].size(); ++b) {
    prompt.tables[0][b] = static_cast<int32_t>(max_batch * blocks_per_seq + b);
  }
  prompt.tokens.push_back(seqs.tokens[0]);
  const double linear_params = static_cast<double>(runner.weight_bytes_read_per_step()) / 2 -
                               static_cast<double>(c.vocab_size * c.hidden_size);
  for (int32_t tokens : {512, 2048, 8192}) {
    if (decode_only) break;
    std::vector<double> times;
    double first_ms = 0;  // includes choosing the GEMM algorithms of new shapes
    for (int rep = 0; rep < 4; ++rep) {
      ForwardInputs in = MakeInputs(prompt, 0, 1, 0, tokens, true, storage);
      const bool profiled = profile_passes && tokens == 2048 && rep == 3;
      if (profiled) TANDEM_CUDA_CHECK(cudaProfilerStart());
      double ms = WallMs([&] { Check(runner.Forward(in)); });
      if (profiled) TANDEM_CUDA_CHECK(cudaProfilerStop());
      if (rep > 0) times.push_back(ms);
      if (rep == 0) first_ms = ms;
    }
    const double ms = Median(times);
    const double attention_flops = 4.0 * c.head_dim * c.num_heads * c.num_layers * tokens *
                                   (tokens + 1) / 2.0;
    const double flops = 2.0 * tokens * linear_params + attention_flops +
                         2.0 * c.hidden_size * c.vocab_size;
    // `flops` is the prefill's nominal work, the count every session used: the linear
    // layers over every prompt token, causal attention, one LM-head row. The runner skips
    // the last layer's o projection and MLP for the rows without logits (all but the last
    // here) and runs that layer's attention for the last token's tile only (its
    // kPrefillRowsPerTile / group tokens, each over ~all keys), so it performs less:
    // performed_tflop, and the rate over it.
    const double tile_tokens = std::min<double>(
        tokens, kPrefillRowsPerTile / static_cast<double>(c.num_heads / c.num_kv_heads));
    const double skipped =
        2.0 * (tokens - 1) *
            static_cast<double>(c.num_heads * c.head_dim * c.hidden_size +
                                3 * c.intermediate_size * c.hidden_size) +
        attention_flops / c.num_layers -
        4.0 * c.head_dim * c.num_heads * tile_tokens * tokens;
    const double performed = flops - skipped;
    out["prefill"].push_back({{"tokens", tokens},
                              {"ms", ms},
                              {"first_call_ms", first_ms},
                              {"tokens_per_s", tokens / ms * 1e3},
                              {"tflops", flops / (ms * 1e-3) / 1e12},
                              {"roofline_fraction", flops / gemm_rate / (ms * 1e-3)},
                              {"performed_tflop", performed / 1e12},
                              {"performed_roofline_fraction",
                               performed / gemm_rate / (ms * 1e-3)}});
  }

  // Where a prefill's time goes in sequence: a host thread stamps when each layer's KV write
  // completes on the GPU (the runner's per-layer progress events, polled), so the time per
  // layer in a real pass can be set against the kernels' isolated times (prefill_kernels).
  for (int32_t tokens : {2048, 8192}) {
    if (decode_only) break;
    ForwardInputs in = MakeInputs(prompt, 0, 1, 0, tokens, true, storage);
    KvLayerProgress progress(c.num_layers);
    in.kv_progress = &progress;
    std::vector<double> written_ms(c.num_layers, -1.0);
    const auto start = std::chrono::steady_clock::now();
    auto since_start = [&] {
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
          .count();
    };
    std::thread poller([&] {
      TANDEM_CUDA_CHECK(cudaSetDevice(0));
      for (int64_t l = 0; l < c.num_layers; ++l) {
        absl::StatusOr<void*> event = progress.WaitForLayers(l + 1, absl::Now() + absl::Seconds(30));
        if (!event.ok()) return;
        while (*event != nullptr &&
               cudaEventQuery(static_cast<cudaEvent_t>(*event)) == cudaErrorNotReady) {
        }
        written_ms[l] = since_start();
      }
    });
    Check(runner.Forward(in));
    const double total_ms = since_start();
    progress.Complete();
    poller.join();
    std::vector<double> per_layer;
    for (int64_t l = 1; l < c.num_layers; ++l) {
      if (written_ms[l] >= 0 && written_ms[l - 1] >= 0) per_layer.push_back(written_ms[l] - written_ms[l - 1]);
    }
    std::sort(per_layer.begin(), per_layer.end());
    if (per_layer.empty()) continue;
    out["prefill_layer_timeline"].push_back(
        {{"tokens", tokens},
         {"total_ms", total_ms},
         {"first_layer_written_ms", written_ms[0]},
         {"per_layer_ms_median", per_layer[per_layer.size() / 2]},
         {"per_layer_ms_min", per_layer.front()},
         {"per_layer_ms_max", per_layer.back()},
         {"layers_1_to_last_ms", written_ms[c.num_layers - 1] - written_ms[0]},
         {"after_last_layer_written_ms", total_ms - written_ms[c.num_layers - 1]}});
  }

  if (!decode_only) out["prefill_kernels"] = PrefillBreakdown(runner, prompt, stream, gemm_rate);
  if (prefill_only) {
    std::cout << out.dump(1) << std::endl;
    return 0;
  }

  // Fill the KV of max_batch sequences with max_context tokens, 4 sequences per call.
  double fill_ms = WallMs([&] {
    for (int64_t s = 0; s < max_batch; s += 4) {
      Check(runner.Forward(MakeInputs(seqs, s, 4, 0, max_context, false, storage)));
    }
  });
  out["kv_fill_ms"] = fill_ms;

  const size_t kv_bytes_per_token = runner.kv_layout().kv_bytes_per_block() / kBlock;
  // Steps 0 and 1 warm up (eager, then graph capture); the median of the next decode_steps.
  // A step is what the engine does: Forward with the logits left on the device, then greedy
  // sampling of every row on the GPU (SampleLogits); `host_logits` instead copies the logits
  // to the host as before the GPU sampler (and samples nothing).
  SamplingParams greedy{.temperature = 0.0f};
  std::vector<SequenceSamplingState> states;
  for (int64_t i = 0; i < max_batch; ++i) states.push_back(MakeSequenceState({}, i));
  const std::vector<int32_t> eos = c.eos_token_ids;
  // kForwardThenSync: the pass and a device synchronization, no sampling (with
  // kForwardOnly, whose host runs ahead and keeps the GPU busy, it splits the step's
  // non-pass time into the host / launch side and the sampler's tail).
  // kSyncThenSample: the pass, a device synchronization, then the sampling on an idle GPU
  // (sample_call_ms: the sampler's own latency, launch to tokens on the host).
  bool decode_profiled = false;  // --profile_passes brackets the first batch-64 2k step only
  enum class Step { kSampleOnGpu, kLogitsToHost, kForwardOnly, kForwardThenSync, kSyncThenSample };
  auto decode = [&](int64_t batch, int32_t context, Step mode = Step::kSampleOnGpu) {
    const bool host_logits = mode == Step::kLogitsToHost;
    std::vector<SamplingRow> rows;
    std::vector<int32_t> logits_rows;
    for (int64_t i = 0; i < batch; ++i) {
      rows.push_back({.params = &greedy, .state = &states[i]});
      logits_rows.push_back(static_cast<int32_t>(i));
    }
    const SamplingContext ctx{.vocab_size = c.vocab_size, .eos_token_ids = eos};
    std::vector<double> times, forward_times, sample_times, pass_gpu, after_gpu;
    // Events on the runner's stream around the pass (recorded before Forward and after it
    // returns) and after the step: GPU-side times, in the modes that wait for every step.
    const bool timed_on_gpu = mode != Step::kForwardOnly;
    CudaEvent before = *CudaEvent::Create(), queued = *CudaEvent::Create(),
              after = *CudaEvent::Create();
    for (int step = 0; step < decode_steps + 2; ++step) {
      ForwardInputs in = MakeInputs(seqs, 0, batch, context + step, 1, true, storage);
      in.logits_on_host = host_logits;
      double forward_ms = 0;
      const bool profiled = profile_passes && batch == 64 && context == 2048 &&
                            mode == Step::kSampleOnGpu && step == decode_steps + 1 &&
                            !decode_profiled;
      if (profiled) TANDEM_CUDA_CHECK(cudaProfilerStart());
      double ms = WallMs([&] {
        absl::StatusOr<LogitsView> logits;
        if (timed_on_gpu) before.Record(runner.stream());
        forward_ms = WallMs([&] { logits = runner.Forward(in); });
        Check(logits);
        if (timed_on_gpu) queued.Record(runner.stream());
        if (mode == Step::kSampleOnGpu) {
          Check(runner.SampleLogits(*logits, logits_rows, ctx, rows));
        }
        if (mode == Step::kForwardThenSync || mode == Step::kSyncThenSample) {
          TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
        }
        if (mode == Step::kSyncThenSample) {
          sample_times.push_back(
              WallMs([&] { Check(runner.SampleLogits(*logits, logits_rows, ctx, rows)); }));
        }
      });
      if (timed_on_gpu) {
        after.Record(runner.stream());
        after.Synchronize();
      }
      if (profiled) {
        TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
        TANDEM_CUDA_CHECK(cudaProfilerStop());
        decode_profiled = true;
      }
      if (step >= 2) {
        times.push_back(ms);
        forward_times.push_back(forward_ms);
        if (timed_on_gpu) {
          pass_gpu.push_back(queued.ElapsedMsSince(before));
          after_gpu.push_back(after.ElapsedMsSince(queued));
        }
      }
    }
    const double ms = Median(times);
    const double bytes = static_cast<double>(runner.weight_bytes_read_per_step()) +
                         static_cast<double>(batch) * (context + decode_steps / 2) *
                             static_cast<double>(kv_bytes_per_token);
    // forward_call_ms: the host's time in Forward (it returns once the pass is queued when
    // the GPU sampler follows), during which the GPU is idle since the last step's sync.
    // gpu_pass_ms: on the stream, from before Forward to the pass's end (its launch
    // included); gpu_after_pass_ms: from there to the step's end (the sampling).
    return nlohmann::json{{"batch", batch}, {"context", context}, {"step_ms", ms},
                          {"forward_call_ms", Median(forward_times)},
                          {"sample_call_ms", sample_times.empty() ? 0.0 : Median(sample_times)},
                          {"gpu_pass_ms", pass_gpu.empty() ? 0.0 : Median(pass_gpu)},
                          {"gpu_after_pass_ms", after_gpu.empty() ? 0.0 : Median(after_gpu)},
                          {"tokens_per_s", batch / ms * 1e3},
                          {"roofline_tokens_per_s", batch / (bytes / copy_bw)},
                          {"roofline_fraction", bytes / copy_bw / (ms * 1e-3)}};
  };
  // Pipelined steps (the engine with EngineOptions::pipeline_steps, docs/engine.md): step
  // N + 1's pass is queued with its tokens fed on the device (FedTokenId) before step N's
  // tokens are collected, then N + 1's sampling starts. A step's time is one iteration of
  // that loop in the steady state (after the eager step and the graph capture).
  auto decode_pipelined = [&](int64_t batch, int32_t context) {
    std::vector<SamplingRow> rows;
    std::vector<int32_t> logits_rows, fed;
    for (int64_t i = 0; i < batch; ++i) {
      rows.push_back({.params = &greedy, .state = &states[i]});
      logits_rows.push_back(static_cast<int32_t>(i));
      fed.push_back(FedTokenId(static_cast<int32_t>(i)));
    }
    const SamplingContext ctx{.vocab_size = c.vocab_size, .eos_token_ids = eos};
    ForwardInputs in = MakeInputs(seqs, 0, batch, context, 1, true, storage);
    in.logits_on_host = false;
    absl::StatusOr<LogitsView> logits = runner.Forward(in);
    Check(logits);
    Check(runner.StartSampleLogits(*logits, logits_rows, ctx, rows));
    // Events on the stream after each queued pass and after each queued sampling: GPU-side
    // step, pass (metadata copy, fed-token resolve and graph) and sampling times.
    std::vector<CudaEvent> passed, sampled;
    std::vector<double> times;
    for (int step = 1; step < decode_steps + 3; ++step) {
      passed.push_back(*CudaEvent::Create());
      sampled.push_back(*CudaEvent::Create());
      const double ms = WallMs([&] {
        ForwardInputs next = MakeInputs(seqs, 0, batch, context + step, 1, true, storage);
        next.token_ids = fed;
        next.logits_on_host = false;
        logits = runner.Forward(next);
        Check(logits);
        passed.back().Record(runner.stream());
        Check(runner.FinishSampleLogits());
        Check(runner.StartSampleLogits(*logits, logits_rows, ctx, rows));
        sampled.back().Record(runner.stream());
      });
      if (step >= 3) times.push_back(ms);
    }
    Check(runner.FinishSampleLogits());
    std::vector<double> gpu_step, gpu_pass, gpu_sample;
    for (size_t k = 2; k < sampled.size(); ++k) {
      gpu_step.push_back(sampled[k].ElapsedMsSince(sampled[k - 1]));
      gpu_pass.push_back(passed[k].ElapsedMsSince(sampled[k - 1]));
      gpu_sample.push_back(sampled[k].ElapsedMsSince(passed[k]));
    }
    const double ms = Median(times);
    const double bytes = static_cast<double>(runner.weight_bytes_read_per_step()) +
                         static_cast<double>(batch) * (context + decode_steps / 2) *
                             static_cast<double>(kv_bytes_per_token);
    return nlohmann::json{{"batch", batch}, {"context", context}, {"step_ms", ms},
                          {"gpu_step_ms", Median(gpu_step)}, {"gpu_pass_ms", Median(gpu_pass)},
                          {"gpu_sample_ms", Median(gpu_sample)},
                          {"tokens_per_s", batch / ms * 1e3},
                          {"roofline_tokens_per_s", batch / (bytes / copy_bw)},
                          {"roofline_fraction", bytes / copy_bw / (ms * 1e-3)}};
  };
  for (int32_t context : {128, 2048}) {
    for (int64_t batch : {1, 8, 64, 256}) {
      if (batch > max_batch) continue;
      out["decode"].push_back(decode(batch, context));
      out["decode_pipelined"].push_back(decode_pipelined(batch, context));
    }
  }
  // What the CUDA graphs and the GEMV (batch 1) are worth, and what the skinny tensor-core
  // GEMM (off by default) would do at batches 8 and 64: the same steps with one switched.
  const CudaRunnerOptions defaults;
  for (auto [graphs, gemv_rows, skinny_rows, what] :
       {std::tuple{false, defaults.gemv_max_rows, defaults.skinny_gemm_max_rows, "no_cuda_graphs"},
        {true, int64_t{0}, defaults.skinny_gemm_max_rows, "cublaslt_not_gemv"},
        {true, defaults.gemv_max_rows, kSkinnyGemmMaxRows, "skinny_gemm_not_cublaslt"}}) {
    runner.set_use_cuda_graphs(graphs);
    runner.set_gemv_max_rows(gemv_rows);
    runner.set_skinny_gemm_max_rows(skinny_rows);
    for (int64_t batch : {1, 8, 64}) {
      if (batch > max_batch) continue;
      const std::string_view variant = what;
      if (variant == "cublaslt_not_gemv" && batch > defaults.gemv_max_rows) continue;
      if (variant == "skinny_gemm_not_cublaslt" && batch <= defaults.gemv_max_rows) continue;
      nlohmann::json row = decode(batch, 2048);
      row["variant"] = what;
      out["decode_attribution"].push_back(row);
    }
  }
  runner.set_use_cuda_graphs(true);
  runner.set_gemv_max_rows(defaults.gemv_max_rows);
  runner.set_skinny_gemm_max_rows(defaults.skinny_gemm_max_rows);
  for (int64_t batch : {1, 64}) {  // the step before the GPU sampler: logits to the host
    if (batch > max_batch) continue;
    nlohmann::json row = decode(batch, 2048, Step::kLogitsToHost);
    row["variant"] = "logits_to_host_no_sampling";
    out["decode_attribution"].push_back(row);
    row = decode(batch, 2048, Step::kForwardOnly);
    row["variant"] = "forward_only_no_sampling";
    out["decode_attribution"].push_back(row);
    row = decode(batch, 2048, Step::kForwardThenSync);
    row["variant"] = "forward_then_sync_no_sampling";
    out["decode_attribution"].push_back(row);
    row = decode(batch, 2048, Step::kSyncThenSample);
    row["variant"] = "sync_then_sample";
    out["decode_attribution"].push_back(row);
  }
  // What each kind of small kernel and the attention cost in place: the same steps without
  // them (wrong outputs, true timings). RoPE + KV write is part of the decode attention
  // kernel; SiLU·mul is a kernel of its own only at batch 64 (the GEMV fuses it at batch 1).
  for (auto [skip, what] : {std::pair{CudaModelRunner::kSkipNorms, "without_rms_norms"},
                            {CudaModelRunner::kSkipSiluMul, "without_silu_mul"},
                            {CudaModelRunner::kSkipAttention, "without_attention"}}) {
    runner.set_skip_kernels(skip);
    for (int64_t batch : {1, 64}) {
      if (batch > max_batch) continue;
      nlohmann::json row = decode(batch, 2048);
      row["variant"] = what;
      out["decode_attribution"].push_back(row);
    }
  }
  runner.set_skip_kernels(CudaModelRunner::kSkipNone);

  if (!decode_only) {
    out["kernels"] = KernelBreakdown(runner, seqs, static_cast<int32_t>(max_context), stream,
                                     copy_bw, gemm_rate);
  }

  // What the logits copy to the host costs at batch 64 (gone once sampling runs on the GPU).
  PinnedBuffer host = *PinnedBuffer::Allocate(64 * c.vocab_size * 4);
  DeviceBuffer device = *DeviceBuffer::Allocate(64 * c.vocab_size * 4);
  out["logits_copy_ms_batch64"] = TimeMs(stream, 5, [&] {
    TANDEM_CUDA_CHECK(cudaMemcpyAsync(host.data(), device.data(), device.size_bytes(),
                                      cudaMemcpyDeviceToHost, stream.get()));
  });
  std::cout << out.dump(1) << std::endl;
  return 0;
}

}  // namespace tandem::bench

int main(int argc, char** argv) { return tandem::bench::Main(argc, argv); }
