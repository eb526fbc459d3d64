// Sampling on the device through the engine (ModelRunner::SampleLogits on the CUDA runner):
// the same requests give exactly the same tokens, and logprobs within a few floats, as the
// host chain (SampleBatch) on the same runner's logits, greedy equals the fixture's reference where the
// other GPU tests say it must, and plain rows never bring their logits to the host.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <mutex>
#include <numeric>
#include <random>

#include "common/backend/cuda/cuda_model_runner.h"
#include "common/engine/engine.h"
#include "common/sampling/sampler.h"
#include "gtest/gtest.h"
#include "tests/common/backend/cuda/cuda_test_util.h"
#include "tests/common/model/safetensors_writer.h"
#include "tests/testing/batch_builder.h"
#include "tests/testing/collecting_sink.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::BatchBuilder;
using ::tandem::testing::CollectingSink;
using ::tandem::testing::LogitsFor;

// Logprobs agree within kLogprobUlps floats, not bit for bit: both sides take the
// log-normalizer as a double sum of exp() over the vocabulary, in different orders (the CPU
// sequentially, the GPU by warps), so the two doubles may differ in their last bits, and a
// logprob far smaller in magnitude than the normalizer (a near-certain token's -1e-7 next to
// a normalizer of ~10) can then round to a neighbouring float. Tokens, ids and finish
// reasons agree exactly.
constexpr int32_t kLogprobUlps = 4;

bool SameLogprob(float a, float b) {
  if (a == b) return true;
  if (std::isnan(a) || std::isnan(b) || std::signbit(a) != std::signbit(b)) return false;
  int32_t ia, ib;
  std::memcpy(&ia, &a, sizeof(ia));
  std::memcpy(&ib, &b, sizeof(ib));
  return std::abs(static_cast<int64_t>(ia) - ib) <= kLogprobUlps;
}

// Host vs device sampling of one row: false, with the first difference in `why`.
bool SameSampledToken(const SampledToken& h, const SampledToken& d, std::string* why) {
  char buffer[160];
  if (h.token_id != d.token_id || h.logprobs.has_value() != d.logprobs.has_value()) {
    std::snprintf(buffer, sizeof(buffer), "token %d vs %d", h.token_id, d.token_id);
    *why = buffer;
    return false;
  }
  if (!h.logprobs) return true;
  if (h.logprobs->top.size() != d.logprobs->top.size()) {
    *why = "top logprob counts differ";
    return false;
  }
  auto entry = [&](const char* what, int32_t hid, float hv, int32_t did, float dv) {
    if (hid == did && SameLogprob(hv, dv)) return true;
    std::snprintf(buffer, sizeof(buffer), "%s: host (%d, %.9g) vs device (%d, %.9g)", what, hid,
                  hv, did, dv);
    *why = buffer;
    return false;
  };
  if (!entry("chosen", h.logprobs->chosen.token_id, h.logprobs->chosen.logprob,
             d.logprobs->chosen.token_id, d.logprobs->chosen.logprob)) {
    return false;
  }
  for (size_t t = 0; t < h.logprobs->top.size(); ++t) {
    if (!entry("top", h.logprobs->top[t].token_id, h.logprobs->top[t].logprob,
               d.logprobs->top[t].token_id, d.logprobs->top[t].logprob)) {
      return false;
    }
  }
  return true;
}

// What must agree between two runs, per output (logprobs and scores within kLogprobUlps).
struct OutputKey {
  int32_t index = 0;
  std::vector<int32_t> tokens;
  std::vector<std::pair<int32_t, float>> logprobs;  // chosen, then the top entries
  OutputFinish finish = OutputFinish::kNone;
  float score = 0.0f;
  bool operator==(const OutputKey& o) const {
    if (index != o.index || tokens != o.tokens || finish != o.finish ||
        logprobs.size() != o.logprobs.size() || !SameLogprob(score, o.score)) {
      return false;
    }
    for (size_t i = 0; i < logprobs.size(); ++i) {
      if (logprobs[i].first != o.logprobs[i].first ||
          !SameLogprob(logprobs[i].second, o.logprobs[i].second)) {
        return false;
      }
    }
    return true;
  }
};

std::vector<OutputKey> Keys(const CollectingSink& sink) {
  std::vector<OutputKey> keys;
  for (const EngineOutput& o : sink.outputs) {
    OutputKey key{.index = o.index, .tokens = o.token_ids, .finish = o.finish, .score = o.score};
    for (const SampledLogprobs& l : o.logprobs) {
      key.logprobs.emplace_back(l.chosen.token_id, l.chosen.logprob);
      for (const TokenLogprob& t : l.top) key.logprobs.emplace_back(t.token_id, t.logprob);
    }
    keys.push_back(std::move(key));
  }
  return keys;
}

// Every sampling control, n > 1 fan-outs (rows copied per sample), a repeated logit_bias id
// (the sampler's CPU fallback) and, optionally, a beam search (rows that go to the host and
// leave the sampled rows non-consecutive).
std::vector<EngineRequest> MixedRequests(const std::vector<std::vector<int32_t>>& prompts,
                                         bool with_beams) {
  std::vector<EngineRequest> out;
  auto add = [&](auto&& set) {
    const size_t i = out.size();
    EngineRequest r{.request_id = "r" + std::to_string(i),
                    .prompt_ids = prompts[i % prompts.size()],
                    .seed = 1000 + i};
    r.params.max_tokens = 20;
    r.params.ignore_eos = true;
    set(r.params);
    out.push_back(std::move(r));
  };
  add([](SamplingParams& p) {
    p.temperature = 0.0f;
    p.logprobs = 5;
  });
  add([](SamplingParams& p) {
    p.temperature = 0.8f;
    p.logprobs = 3;
  });
  add([](SamplingParams& p) {
    p.temperature = 1.2f;
    p.top_k = 20;
  });
  add([](SamplingParams& p) {
    p.top_p = 0.9f;
    p.logprobs = 20;
  });
  add([](SamplingParams& p) {
    p.temperature = 1.5f;
    p.min_p = 0.1f;
  });
  add([](SamplingParams& p) {
    p.top_k = 50;
    p.top_p = 0.8f;
    p.min_p = 0.05f;
    p.logprobs = 4;
  });
  add([](SamplingParams& p) {
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.3f;
    p.top_p = 0.95f;
  });
  add([](SamplingParams& p) {
    p.temperature = 0.0f;
    p.repetition_penalty = 1.2f;
    p.frequency_penalty = 0.4f;
    p.logprobs = 2;
  });
  add([](SamplingParams& p) { p.no_repeat_ngram_size = 2; });
  add([](SamplingParams& p) {
    p.logit_bias = {{5, 3.0f}, {9, -2.0f}};
    p.bad_token_ids = {3, 7};
    p.min_tokens = 8;
    p.stop_token_ids = {2};
    p.ignore_eos = false;
  });
  add([](SamplingParams& p) {
    for (int32_t id = 10; id < 60; ++id) p.allowed_token_ids.push_back(id);
    p.logit_bias = {{12, 4.0f}};
    p.logprobs = 8;
  });
  add([](SamplingParams& p) {
    p.n = 3;
    p.logprobs = 2;
  });
  add([](SamplingParams& p) {
    p.n = 2;
    p.temperature = 0.9f;
    p.top_k = 30;
  });
  add([](SamplingParams& p) { p.logit_bias = {{6, 1.5f}, {6, 0.25f}}; });  // CPU fallback
  add([](SamplingParams& p) {
    p.temperature = 0.0f;
    p.max_tokens = 32;
  });
  if (with_beams) {
    add([](SamplingParams& p) {
      p.temperature = 0.0f;
      p.num_beams = 3;
      p.num_return_sequences = 3;
      p.max_tokens = 10;
    });
  }
  return out;
}

std::vector<std::vector<int32_t>> Prompts(const nlohmann::json& golden) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : golden["prompts"]) prompts.push_back(p["ids"].get<std::vector<int32_t>>());
  return prompts;
}

std::unique_ptr<CudaModelRunner> LoadRunner(const std::string& model, bool gpu_sampling) {
  auto runner = CudaModelRunner::Load(testing::FixturePath("models/" + model),
                                      {.num_kv_blocks = 256,
                                       .max_num_tokens = 256,
                                       .max_num_seqs = 32,
                                       .max_logits_rows = 256,
                                       .gpu_sampling = gpu_sampling});
  EXPECT_TRUE(runner.ok()) << runner.status();
  return runner.ok() ? std::move(*runner) : nullptr;
}

struct RunResult {
  std::vector<std::vector<OutputKey>> outputs;  // per request
  CudaLogitsCounts counts;
  int32_t num_blocks_free = 0, num_blocks_total = 0;
  int64_t num_pipelined_steps = 0;
};

// Runs `requests` concurrently through an engine over `runner` to completion.
RunResult RunEngine(std::unique_ptr<ModelRunner> runner, const CudaModelRunner* cuda,
                    std::shared_ptr<const Tokenizer> tokenizer,
                    std::vector<EngineRequest> requests, bool pipeline = false) {
  Engine engine({.scheduler = {.max_num_seqs = 32, .max_num_batched_tokens = 256},
                 .pipeline_steps = pipeline},
                std::move(runner), std::move(tokenizer));
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (EngineRequest& r : requests) {
    sinks.push_back(std::make_shared<CollectingSink>());
    r.sink = sinks.back();
    EXPECT_TRUE(engine.AddRequest(r).ok());
  }
  for (int i = 0; i < 10000 && engine.Step(); ++i) {
  }
  RunResult result;
  for (const auto& sink : sinks) result.outputs.push_back(Keys(*sink));
  result.counts = cuda->logits_counts();
  EngineStats stats = engine.stats();
  result.num_blocks_free = stats.num_blocks_free;
  result.num_blocks_total = stats.num_blocks_total;
  result.num_pipelined_steps = stats.num_pipelined_steps;
  return result;
}

class CudaEngineSamplingTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    int count = 0;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess) << "no CUDA device (gpu tests need one)";
    golden_ = testing::ReadJsonFixture("models/" + GetParam() + "/golden.json");
    auto tokenizer = Tokenizer::Load(testing::FixturePath("models/" + GetParam()));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
  }

  RunResult Run(bool gpu_sampling, bool with_beams, bool pipeline = false) {
    std::unique_ptr<CudaModelRunner> runner = LoadRunner(GetParam(), gpu_sampling);
    if (runner == nullptr) return {};
    const CudaModelRunner* raw = runner.get();
    return RunEngine(std::move(runner), raw, tokenizer_,
                     MixedRequests(Prompts(golden_), with_beams), pipeline);
  }

  nlohmann::json golden_;
  std::shared_ptr<const Tokenizer> tokenizer_;
};

void ExpectSameOutputs(const RunResult& device, const RunResult& host) {
  ASSERT_EQ(device.outputs.size(), host.outputs.size());
  size_t tokens = 0;
  for (size_t r = 0; r < device.outputs.size(); ++r) {
    ASSERT_FALSE(device.outputs[r].empty()) << "request " << r;
    EXPECT_TRUE(device.outputs[r] == host.outputs[r]) << "request " << r << " differs";
    for (size_t o = 0; o < std::min(device.outputs[r].size(), host.outputs[r].size()); ++o) {
      const OutputKey &d = device.outputs[r][o], &h = host.outputs[r][o];
      if (d == h) continue;
      std::cout << "  request " << r << " output " << o << " index " << d.index << "/" << h.index
                << ": token " << (d.tokens.empty() ? -1 : d.tokens[0]) << " vs "
                << (h.tokens.empty() ? -1 : h.tokens[0]) << ", " << d.logprobs.size() << " vs "
                << h.logprobs.size() << " logprobs, score " << d.score << " vs " << h.score;
      for (size_t i = 0; i < std::min(d.logprobs.size(), h.logprobs.size()); ++i) {
        std::printf(" [(%d, %.9g) vs (%d, %.9g)]", d.logprobs[i].first, d.logprobs[i].second,
                    h.logprobs[i].first, h.logprobs[i].second);
      }
      std::cout << std::endl;
      break;
    }
    for (const OutputKey& k : device.outputs[r]) tokens += k.tokens.size();
  }
  std::cout << "  " << device.outputs.size() << " requests, " << tokens
            << " tokens compared; device counts: sampled " << device.counts.device_sampled_rows
            << ", gathered " << device.counts.gathered_rows << ", fallback "
            << device.counts.fallback_rows << ", host rows " << device.counts.host_rows
            << "; host run: host rows " << host.counts.host_rows << "\n";
}

// Two engines over two runners with the same weights and options, GPU sampling on and off:
// every output (tokens, every logprob, finish, beam scores) is identical. With the beam
// search, its rows (and only those) come to the host.
TEST_P(CudaEngineSamplingTest, DeviceSamplingEqualsHostSamplingWithBeams) {
  RunResult device = Run(/*gpu_sampling=*/true, /*with_beams=*/true);
  RunResult host = Run(/*gpu_sampling=*/false, /*with_beams=*/true);
  ExpectSameOutputs(device, host);
  EXPECT_GT(device.counts.device_sampled_rows, 0);
  EXPECT_GT(device.counts.gathered_rows, 0);  // fan-outs and beam gaps
  EXPECT_GT(device.counts.fallback_rows, 0);  // the repeated logit_bias id
  EXPECT_GT(device.counts.host_rows, 0);      // beam rows
  EXPECT_LT(device.counts.host_rows, host.counts.host_rows / 4);
  EXPECT_EQ(host.counts.device_sampled_rows, 0);
  EXPECT_EQ(device.num_blocks_free, device.num_blocks_total);
}

// Pipelined steps (each pass's tokens fed on the device from the pending GPU sampling, the
// sampler's CPU-fallback rows included) give exactly the synchronous engine's outputs, with
// and without a beam search in the batch, and free every block.
TEST_P(CudaEngineSamplingTest, PipelinedStepsEqualSynchronousSteps) {
  RunResult piped = Run(/*gpu_sampling=*/true, /*with_beams=*/false, /*pipeline=*/true);
  RunResult sync = Run(/*gpu_sampling=*/true, /*with_beams=*/false);
  ExpectSameOutputs(piped, sync);
  EXPECT_GT(piped.num_pipelined_steps, 0);
  EXPECT_GT(piped.counts.fallback_rows, 0);  // a fallback row's token fed from the host
  EXPECT_EQ(piped.counts.host_rows, 0);
  EXPECT_EQ(piped.num_blocks_free, piped.num_blocks_total);
  RunResult piped_beams = Run(/*gpu_sampling=*/true, /*with_beams=*/true, /*pipeline=*/true);
  RunResult host_beams = Run(/*gpu_sampling=*/false, /*with_beams=*/true);
  ExpectSameOutputs(piped_beams, host_beams);
  EXPECT_EQ(piped_beams.num_blocks_free, piped_beams.num_blocks_total);
}

// Without beams no logits row ever reaches the host when GPU sampling is on.
TEST_P(CudaEngineSamplingTest, PlainRowsNeverCopyLogitsToTheHost) {
  RunResult device = Run(/*gpu_sampling=*/true, /*with_beams=*/false);
  RunResult host = Run(/*gpu_sampling=*/false, /*with_beams=*/false);
  ExpectSameOutputs(device, host);
  EXPECT_EQ(device.counts.host_rows, 0);
  EXPECT_GT(device.counts.fallback_rows, 0);
  EXPECT_GT(host.counts.host_rows, 0);
}

// A runner that samples every row both ways on the same logits (one forward pass): the
// host chain on the copied rows and the device sampler on the device rows. Tokens and
// logprobs must agree bit for bit; the engine continues with the device's.
struct CompareCounts {
  int64_t rows_compared = 0, rows_different = 0;
};

class ComparingRunner final : public ModelRunner {
 public:
  // `counts` outlives the runner (the engine owns the runner and destroys it).
  ComparingRunner(std::unique_ptr<CudaModelRunner> inner, CompareCounts& counts)
      : inner_(std::move(inner)), counts_(counts) {}
  absl::StatusOr<LogitsView> Forward(const ForwardInputs& inputs) override {
    ForwardInputs with_host = inputs;
    with_host.logits_on_host = true;
    return inner_->Forward(with_host);
  }
  absl::StatusOr<std::vector<SampledToken>> SampleLogits(
      const LogitsView& logits, std::span<const int32_t> logits_rows, const SamplingContext& ctx,
      std::span<const SamplingRow> rows) override {
    absl::StatusOr<std::vector<SampledToken>> host =
        ModelRunner::SampleLogits(logits, logits_rows, ctx, rows);  // from logits.values
    absl::StatusOr<std::vector<SampledToken>> device =
        inner_->SampleLogits(logits, logits_rows, ctx, rows);
    EXPECT_TRUE(host.ok() && device.ok());
    if (!host.ok() || !device.ok()) return device;
    for (size_t i = 0; i < rows.size(); ++i) {
      ++counts_.rows_compared;
      std::string why;
      if (!SameSampledToken((*host)[i], (*device)[i], &why)) {
        ++counts_.rows_different;
        std::cout << "  row " << i << " differs: " << why << std::endl;
      }
    }
    return device;
  }
  absl::Status CopyLogitsRows(const LogitsView& logits, std::span<const int32_t> logits_rows,
                              std::span<float> out) override {
    return inner_->CopyLogitsRows(logits, logits_rows, out);
  }
  absl::Status CopyBlocks(std::span<const BlockCopy> copies) override {
    return inner_->CopyBlocks(copies);
  }
  const ModelConfig& config() const override { return inner_->config(); }
  const KvLayout& kv_layout() const override { return inner_->kv_layout(); }
  int64_t num_kv_blocks() const override { return inner_->num_kv_blocks(); }
  const CudaModelRunner& inner() const { return *inner_; }

 private:
  std::unique_ptr<CudaModelRunner> inner_;
  CompareCounts& counts_;
};

TEST_P(CudaEngineSamplingTest, DeviceAndHostAgreeOnTheSameLogitsEveryStep) {
  std::unique_ptr<CudaModelRunner> cuda = LoadRunner(GetParam(), /*gpu_sampling=*/true);
  ASSERT_NE(cuda, nullptr);
  CompareCounts counts;
  auto comparing = std::make_unique<ComparingRunner>(std::move(cuda), counts);
  const CudaModelRunner* inner = &comparing->inner();
  RunResult result = RunEngine(std::move(comparing), inner, tokenizer_,
                               MixedRequests(Prompts(golden_), /*with_beams=*/true));
  std::cout << "  same logits: " << counts.rows_compared << " rows sampled both ways, "
            << counts.rows_different << " different; device counts: sampled "
            << result.counts.device_sampled_rows << ", gathered " << result.counts.gathered_rows
            << ", fallback " << result.counts.fallback_rows << "\n";
  EXPECT_GT(counts.rows_compared, 200);
  EXPECT_EQ(counts.rows_different, 0);
  EXPECT_EQ(result.counts.device_sampled_rows, counts.rows_compared);
}

// Greedy, one request at a time (as `tandem generate` runs them): the reference tokens up to
// the first step whose reference margin (top-1 minus top-2) is within twice the backend's
// documented max |dlogit| (0.75 / 1.10; docs/cuda_backend.md), where bf16 rounding may flip
// the argmax, as cuda_model_runner_test asserts; the full match count is printed.
TEST_P(CudaEngineSamplingTest, GreedyAloneMatchesReference) {
  const float near_tie = GetParam() == "llama3-tiny" ? 1.5f : 2.2f;
  std::unique_ptr<CudaModelRunner> runner = LoadRunner(GetParam(), /*gpu_sampling=*/true);
  ASSERT_NE(runner, nullptr);
  const CudaModelRunner* raw = runner.get();
  Engine engine({.scheduler = {.max_num_seqs = 32, .max_num_batched_tokens = 256}},
                std::move(runner), tokenizer_);
  size_t matched_total = 0, total = 0;
  for (size_t p = 0; p < golden_["prompts"].size(); ++p) {
    const auto& prompt = golden_["prompts"][p];
    std::vector<int32_t> want = prompt["greedy"].get<std::vector<int32_t>>();
    std::vector<float> margins = prompt["greedy_margins"].get<std::vector<float>>();
    auto sink = std::make_shared<CollectingSink>();
    EngineRequest r{.request_id = "g" + std::to_string(p),
                    .prompt_ids = prompt["ids"].get<std::vector<int32_t>>(),
                    .sink = sink};
    r.params.temperature = 0.0f;
    r.params.max_tokens = static_cast<int32_t>(want.size());
    r.params.ignore_eos = true;
    ASSERT_TRUE(engine.AddRequest(r).ok());
    for (int i = 0; i < 1000 && engine.Step(); ++i) {
    }
    std::vector<int32_t> got = sink->Tokens();
    ASSERT_EQ(got.size(), want.size());
    size_t matched = 0;
    while (matched < want.size() && got[matched] == want[matched]) ++matched;
    size_t must = 0;
    while (must < want.size() && margins[must] > near_tie) ++must;
    EXPECT_GE(matched, must) << "prompt " << p;
    std::cout << "  prompt " << p << ": " << matched << "/" << want.size()
              << " greedy tokens equal the reference (must: " << must << ")\n";
    matched_total += matched;
    total += want.size();
  }
  std::cout << "  greedy alone: " << matched_total << "/" << total
            << " tokens equal the reference before the first difference\n";
  EXPECT_EQ(raw->logits_counts().host_rows, 0);
  EXPECT_GT(raw->logits_counts().device_sampled_rows, 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaEngineSamplingTest,
                         ::testing::Values("llama3-tiny", "llama2-tiny"), [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// ---- The 8B vocabulary (128256) at batch 64: a one-layer random model with llama3-tiny's
// shape otherwise, written to a temp dir. Checks the runner-level seam on the same logits
// and times the logits path of an engine step both ways.

std::string RandomModelDir(int64_t vocab) {
  const std::string dir = testing::MakeTempDir("vocab" + std::to_string(vocab));
  nlohmann::json config = testing::ReadJsonFixture("models/llama3-tiny/config.json");
  config["vocab_size"] = vocab;
  config["num_hidden_layers"] = 1;
  testing::WriteFile(dir + "/config.json", config.dump());
  std::ifstream generation(testing::FixturePath("models/llama3-tiny/generation_config.json"));
  testing::WriteFile(dir + "/generation_config.json",
                     std::string(std::istreambuf_iterator<char>(generation), {}));
  const auto hidden = config["hidden_size"].get<int64_t>();
  const auto inter = config["intermediate_size"].get<int64_t>();
  const auto heads = config["num_attention_heads"].get<int64_t>();
  const auto kv_heads = config["num_key_value_heads"].get<int64_t>();
  const auto head_dim = config["head_dim"].get<int64_t>();
  std::mt19937 rng(7);
  auto random = [&](std::string name, std::vector<int64_t> shape, float scale) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint16_t> values = testing::RandomBf16(static_cast<size_t>(n), rng, scale);
    return testing::TestTensor{std::move(name), "BF16", std::move(shape),
                               testing::U16Bytes(values)};
  };
  auto ones = [&](std::string name, int64_t n) {
    std::vector<uint16_t> values(static_cast<size_t>(n), FloatToBf16(1.0f));
    return testing::TestTensor{std::move(name), "BF16", {n}, testing::U16Bytes(values)};
  };
  const std::string p = "model.layers.0.";
  std::vector<testing::TestTensor> tensors = {
      random("model.embed_tokens.weight", {vocab, hidden}, 0.1f),
      ones("model.norm.weight", hidden),
      ones(p + "input_layernorm.weight", hidden),
      ones(p + "post_attention_layernorm.weight", hidden),
      random(p + "self_attn.q_proj.weight", {heads * head_dim, hidden}, 0.05f),
      random(p + "self_attn.k_proj.weight", {kv_heads * head_dim, hidden}, 0.05f),
      random(p + "self_attn.v_proj.weight", {kv_heads * head_dim, hidden}, 0.05f),
      random(p + "self_attn.o_proj.weight", {hidden, heads * head_dim}, 0.05f),
      random(p + "mlp.gate_proj.weight", {inter, hidden}, 0.05f),
      random(p + "mlp.up_proj.weight", {inter, hidden}, 0.05f),
      random(p + "mlp.down_proj.weight", {hidden, inter}, 0.05f)};
  testing::WriteFile(dir + "/model.safetensors", testing::MakeSafetensors(tensors));
  return dir;
}

// Row i's parameters at batch 64: a cycle of eight classes.
SamplingParams BigVocabParams(int64_t i) {
  SamplingParams p;
  switch (i % 8) {
    case 0:
      p.temperature = 0.0f;
      break;
    case 1:
      p.temperature = 0.0f;
      p.logprobs = 5;
      break;
    case 2:
      p.temperature = 0.7f;
      p.logprobs = 20;
      break;
    case 3:
      p.top_k = 50;
      break;
    case 4:
      p.top_p = 0.9f;
      break;
    case 5:
      p.min_p = 0.05f;
      p.temperature = 1.3f;
      break;
    case 6:
      p.repetition_penalty = 1.2f;
      p.frequency_penalty = 0.5f;
      p.top_k = 1000;
      break;
    default:
      p.top_k = 100;
      p.top_p = 0.95f;
      p.min_p = 0.01f;
      p.logprobs = 3;
      break;
  }
  return p;
}

double MedianMs(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

TEST(CudaEngineSamplingBigVocabTest, SameTokensAndTheLogitsPathTimedAtBatch64) {
  int count = 0;
  ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess) << "no CUDA device (gpu tests need one)";
  constexpr int64_t kVocab = 128256, kBatch = 64, kPromptLen = 8, kSteps = 6;
  auto loaded = CudaModelRunner::Load(RandomModelDir(kVocab), {.num_kv_blocks = 256,
                                                               .max_num_tokens = 1024,
                                                               .max_num_seqs = kBatch,
                                                               .max_logits_rows = kBatch});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  CudaModelRunner& runner = **loaded;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> token(0, kVocab - 1);
  std::vector<SamplingParams> params;
  std::vector<SequenceSamplingState> states;
  std::vector<std::vector<int32_t>> tables;
  testing::ShuffledBlocks blocks(runner.num_kv_blocks(), /*seed=*/3);
  BatchBuilder prefill(16);
  for (int64_t s = 0; s < kBatch; ++s) {
    std::vector<int32_t> prompt(kPromptLen);
    for (int32_t& t : prompt) t = token(rng);
    params.push_back(BigVocabParams(s));
    states.push_back(MakeSequenceState(prompt, /*seed=*/500 + s));
    tables.push_back(blocks.Take(kPromptLen + kSteps + 40, 16));
    prefill.Add(prompt, 0, tables.back(), LogitsFor::kLast);
  }
  std::vector<SamplingRow> rows;
  for (int64_t s = 0; s < kBatch; ++s) rows.push_back({&params[s], &states[s]});
  std::vector<int32_t> all_rows(kBatch);
  std::iota(all_rows.begin(), all_rows.end(), 0);
  SamplingContext ctx{.vocab_size = kVocab, .eos_token_ids = runner.config().eos_token_ids};

  // Prefill, then kSteps decode steps; each step's rows sampled both ways on one forward.
  int64_t mismatches = 0, compared = 0;
  absl::StatusOr<LogitsView> logits = runner.Forward(prefill.inputs());
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (int64_t step = 0;; ++step) {
    auto host = runner.ModelRunner::SampleLogits(*logits, all_rows, ctx, rows);
    auto device = runner.SampleLogits(*logits, all_rows, ctx, rows);
    ASSERT_TRUE(host.ok() && device.ok());
    for (int64_t s = 0; s < kBatch; ++s) {
      ++compared;
      const SampledToken& d = (*device)[s];
      std::string why;
      if (!SameSampledToken((*host)[s], d, &why)) {
        ++mismatches;
        std::cout << "  step " << step << " row " << s << " differs: " << why << std::endl;
      }
      AppendToken(states[s], d.token_id);
    }
    if (step == kSteps) break;
    BatchBuilder decode(16);
    for (int64_t s = 0; s < kBatch; ++s) {
      const int32_t position = static_cast<int32_t>(states[s].next_position()) - 1;
      decode.Add(std::vector<int32_t>{states[s].output_ids.back()}, position, tables[s],
                 LogitsFor::kLast);
    }
    logits = runner.Forward(decode.inputs());
    ASSERT_TRUE(logits.ok()) << logits.status();
  }
  std::cout << "  vocab " << kVocab << ", batch " << kBatch << ": " << compared
            << " rows sampled both ways on the same logits, " << mismatches << " different\n";
  EXPECT_EQ(mismatches, 0);

  // One decode step repeated (same positions and slots), greedy and temperature-1 rows: the
  // engine's logits path before (logits to the host + SampleBatch) and after (logits stay,
  // SampleLogits on the device), and Forward alone with and without the copy.
  BatchBuilder decode(16);
  for (int64_t s = 0; s < kBatch; ++s) {
    decode.Add(std::vector<int32_t>{states[s].output_ids.back()},
               static_cast<int32_t>(states[s].next_position()) - 1, tables[s], LogitsFor::kLast);
  }
  auto time_ms = [&](bool on_host, auto&& sample) {
    ForwardInputs in = decode.inputs();
    in.logits_on_host = on_host;
    std::vector<double> ms;
    for (int i = 0; i < 12; ++i) {
      auto start = std::chrono::steady_clock::now();
      absl::StatusOr<LogitsView> view = runner.Forward(in);
      EXPECT_TRUE(view.ok()) << view.status();
      if (view.ok()) sample(*view);
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
    ms.erase(ms.begin(), ms.begin() + 2);  // eager step, graph capture
    return MedianMs(ms);
  };
  for (float temperature : {0.0f, 1.0f}) {
    std::vector<SamplingParams> plain(kBatch);
    std::vector<SamplingRow> plain_rows;
    for (int64_t s = 0; s < kBatch; ++s) {
      plain[s].temperature = temperature;
      plain_rows.push_back({&plain[s], &states[s]});
    }
    const double forward_host = time_ms(true, [](const LogitsView&) {});
    const double forward_device = time_ms(false, [](const LogitsView&) {});
    const double before = time_ms(true, [&](const LogitsView& view) {
      EXPECT_TRUE(runner.ModelRunner::SampleLogits(view, all_rows, ctx, plain_rows).ok());
    });
    const double after = time_ms(false, [&](const LogitsView& view) {
      EXPECT_TRUE(runner.SampleLogits(view, all_rows, ctx, plain_rows).ok());
    });
    std::cout << "  batch " << kBatch << ", vocab " << kVocab << ", temperature " << temperature
              << ": Forward with logits copy " << forward_host << " ms, without " << forward_device
              << " ms; step (Forward + sampling) host path " << before << " ms, device path "
              << after << " ms\n";
  }
}

}  // namespace
}  // namespace tandem
