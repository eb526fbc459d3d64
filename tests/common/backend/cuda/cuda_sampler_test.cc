// CudaSampler against the CPU stack (SampleBatch) on identical fp32 logits: the same token
// for every row (greedy and seeded draws), logprobs within 1e-4 relative, the same top-N
// ids. Fresh random logits every run (seed printed); several vocab sizes and batch sizes;
// every parameter class in every batch.
#include "common/backend/cuda/cuda_sampler.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_handles.h"
#include "common/sampling/sampler.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr int32_t kEos = 2;
constexpr int32_t kStop = 5;

// One row's request: params and a history.
struct RowCase {
  std::string name;
  SamplingParams params;
  SequenceSamplingState state;
};

// Every parameter class the GPU path covers, plus one CPU-fallback row.
std::vector<RowCase> AllClasses(int32_t vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  auto history = [&](int prompt_len, int output_len, uint64_t seed) {
    std::vector<int32_t> prompt(prompt_len);
    for (int32_t& t : prompt) t = token(rng);
    // Repeats so that counts > 1 and n-grams recur.
    for (int i = 0; i + 8 < prompt_len; i += 9) prompt[i + 8] = prompt[i];
    SequenceSamplingState s = MakeSequenceState(prompt, seed);
    for (int i = 0; i < output_len; ++i) AppendToken(s, i % 3 == 0 ? prompt[i % prompt_len] : token(rng));
    return s;
  };
  std::vector<RowCase> out;
  auto add = [&](std::string name, SamplingParams p, int prompt_len = 12, int output_len = 6) {
    out.push_back({std::move(name), std::move(p), history(prompt_len, output_len, rng())});
  };
  SamplingParams p;
  p.temperature = 0.0f;
  add("greedy", p);
  p.logprobs = 5;
  add("greedy+logprobs5", p);
  p = {};
  add("plain", p);
  p.temperature = 0.7f;
  add("temperature0.7", p);
  p.temperature = 1.3f;
  p.logprobs = 20;
  add("temperature1.3+logprobs20", p);
  p = {};
  p.top_k = 1;
  add("top_k1", p);
  p.top_k = 50;
  p.temperature = 0.8f;
  add("top_k50", p);
  p.top_k = 1000;
  add("top_k1000", p);
  p = {};
  p.top_p = 0.9f;
  add("top_p0.9", p);
  p.top_p = 0.3f;
  p.temperature = 0.5f;
  add("top_p0.3", p);
  p.top_p = 0.001f;
  add("top_p0.001", p);
  p = {};
  p.min_p = 0.05f;
  add("min_p0.05", p);
  p.min_p = 0.5f;
  p.temperature = 2.0f;
  add("min_p0.5", p);
  p = {};
  p.top_k = 40;
  p.top_p = 0.8f;
  p.min_p = 0.02f;
  p.temperature = 0.9f;
  p.logprobs = 3;
  add("top_k+top_p+min_p+logprobs3", p);
  p = {};
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.3f;
  add("penalties", p, 40, 30);
  p.temperature = 0.0f;
  p.repetition_penalty = 0.8f;
  p.logprobs = 4;
  add("greedy+penalties", p, 40, 30);
  p = {};
  p.no_repeat_ngram_size = 2;
  p.temperature = 0.0f;
  add("greedy+no_repeat_ngram2", p, 30, 10);
  p.no_repeat_ngram_size = 3;
  p.temperature = 0.6f;
  add("no_repeat_ngram3", p, 30, 10);
  p = {};
  p.logit_bias = {{token(rng), 30.0f}, {token(rng), -5.5f}, {7, 2.25f}};
  p.bad_token_ids = {token(rng), token(rng), 9};
  add("bias+bans", p);
  p.temperature = 0.0f;
  add("greedy+bias+bans", p);
  p = {};
  p.allowed_token_ids = {3, 11, 17, token(rng), token(rng)};
  p.logit_bias = {{11, 1.5f}, {12, 100.0f}};
  p.logprobs = 8;
  add("allowed+logprobs8", p);
  p = {};
  p.min_tokens = 10;
  p.stop_token_ids = {kStop};
  p.logprobs = 2;
  add("min_tokens+eos", p, 12, 3);
  p.ignore_eos = true;
  p.temperature = 0.0f;
  add("greedy+min_tokens+ignore_eos", p, 12, 3);
  p = {};
  p.logit_bias = {{4, 1.0f}, {4, 2.0f}};  // a repeated id: the CPU fallback
  p.top_p = 0.95f;
  add("fallback(repeated bias)", p);
  return out;
}

// Random logits: N(0, sigma) per row, and for `quantized` rows rounded to multiples of 0.5
// so that ties at every boundary (argmax, k-th value, top-p, logprobs) are common.
std::vector<float> RandomLogits(size_t rows, size_t vocab, size_t stride, bool quantized,
                                std::mt19937& rng) {
  std::vector<float> out(rows * stride, std::nanf(""));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t r = 0; r < rows; ++r) {
    const float sigma = 0.5f + 0.5f * static_cast<float>(r % 7);  // flat to peaked
    for (size_t i = 0; i < vocab; ++i) {
      float v = normal(rng) * sigma;
      out[r * stride + i] = quantized ? std::round(v * 2.0f) / 2.0f : v;
    }
  }
  return out;
}

class CudaSamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      GTEST_SKIP() << "no CUDA device";
    }
    seed_ = std::random_device{}();
    rng_.seed(seed_);
    std::cout << "seed " << seed_ << "\n";
    stream_ = *CudaStream::Create();
  }

  // Samples `cases` (repeated to `num_rows`) on the GPU and on the CPU from the same
  // logits; returns the number of token mismatches and checks the logprobs.
  int Compare(int32_t vocab, int32_t num_rows, int64_t stride, bool quantized,
              double* worst_logprob_error) {
    std::vector<RowCase> cases = AllClasses(vocab, rng_);
    std::vector<SamplingRow> rows;
    for (int32_t i = 0; i < num_rows; ++i) {
      const RowCase& c = cases[i % cases.size()];
      rows.push_back({&c.params, &c.state});
    }
    std::vector<float> logits = RandomLogits(num_rows, vocab, stride, quantized, rng_);
    std::vector<int32_t> eos = {kEos};
    SamplingContext ctx{.vocab_size = vocab, .eos_token_ids = eos};

    std::vector<float> cpu_logits;
    for (int32_t r = 0; r < num_rows; ++r) {
      cpu_logits.insert(cpu_logits.end(), logits.begin() + r * stride,
                        logits.begin() + r * stride + vocab);
    }
    std::vector<SampledToken> want = SampleBatch(cpu_logits, ctx, rows);

    DeviceBuffer device = *DeviceBuffer::Allocate(logits.size() * sizeof(float));
    TANDEM_CUDA_CHECK(cudaMemcpy(device.data(), logits.data(), logits.size() * sizeof(float),
                                 cudaMemcpyHostToDevice));
    auto sampler = *CudaSampler::Create({.vocab_size = vocab, .max_num_rows = num_rows});
    absl::StatusOr<std::vector<SampledToken>> got =
        sampler->Sample({device.as<float>(), stride}, ctx, rows, stream_.get());
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) return num_rows;
    EXPECT_EQ(sampler->last_num_fallback_rows(),
              static_cast<int32_t>(num_rows / cases.size()));

    int mismatches = 0;
    for (int32_t r = 0; r < num_rows; ++r) {
      const std::string& name = cases[r % cases.size()].name;
      const SampledToken& g = (*got)[r];
      const SampledToken& w = want[r];
      if (g.token_id != w.token_id) {
        ++mismatches;
        ADD_FAILURE() << "row " << r << " (" << name << "): gpu " << g.token_id << " cpu "
                      << w.token_id << " (vocab " << vocab << ")";
        continue;
      }
      EXPECT_EQ(g.logprobs.has_value(), w.logprobs.has_value()) << name;
      if (!w.logprobs || !g.logprobs) continue;
      auto check = [&](float got_value, float want_value, const char* what) {
        const double error = std::abs(static_cast<double>(got_value) - want_value) /
                             std::max(std::abs(static_cast<double>(want_value)), 1e-6);
        if (std::isinf(want_value) && got_value == want_value) return;
        *worst_logprob_error = std::max(*worst_logprob_error, error);
        EXPECT_LE(error, 1e-4) << "row " << r << " (" << name << ") " << what << ": gpu "
                               << got_value << " cpu " << want_value;
      };
      EXPECT_EQ(g.logprobs->chosen.token_id, w.logprobs->chosen.token_id);
      check(g.logprobs->chosen.logprob, w.logprobs->chosen.logprob, "chosen");
      EXPECT_EQ(g.logprobs->top.size(), w.logprobs->top.size()) << name;
      for (size_t k = 0; k < std::min(g.logprobs->top.size(), w.logprobs->top.size()); ++k) {
        EXPECT_EQ(g.logprobs->top[k].token_id, w.logprobs->top[k].token_id)
            << "row " << r << " (" << name << ") top " << k;
        check(g.logprobs->top[k].logprob, w.logprobs->top[k].logprob, "top");
      }
    }
    return mismatches;
  }

  uint32_t seed_ = 0;
  std::mt19937 rng_;
  CudaStream stream_;
};

TEST_F(CudaSamplerTest, SameTokensAndLogprobsAsTheCpuStack) {
  struct Shape {
    int32_t vocab, rows;
    int64_t stride;
    bool quantized;
  };
  const Shape shapes[] = {
      {1001, 1, 1001, false},    {1001, 7, 1003, true},     {1001, 64, 1001, false},
      {32000, 25, 32000, true},  {32000, 64, 32768, false}, {128256, 1, 128256, false},
      {128256, 8, 128256, true}, {128256, 64, 128256, false},
  };
  int total_rows = 0, total_mismatches = 0;
  double worst = 0.0;
  for (const Shape& s : shapes) {
    SCOPED_TRACE(::testing::Message() << "vocab " << s.vocab << " rows " << s.rows << " stride "
                                      << s.stride << (s.quantized ? " quantized" : ""));
    total_mismatches += Compare(s.vocab, s.rows, s.stride, s.quantized, &worst);
    total_rows += s.rows;
  }
  std::cout << "rows " << total_rows << ", token mismatches " << total_mismatches
            << ", worst logprob relative error " << worst << "\n";
  EXPECT_EQ(total_mismatches, 0);
}

// A batch of plain greedy rows (no logprobs, penalties or constraints) runs only the
// multi-block argmax kernel; ties (quantized logits) go to the lowest id as on the CPU, and
// every row's counter is back at zero for the next batch (sampled twice).
TEST_F(CudaSamplerTest, GreedyRowsTakeTheArgMaxKernel) {
  struct Shape {
    int32_t vocab, rows;
    int64_t stride;
  };
  const Shape shapes[] = {{7, 3, 7},          {1001, 1, 1001},    {1001, 7, 1003},
                          {32000, 25, 32001}, {128256, 1, 128256}, {128256, 64, 128256}};
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  ASSERT_TRUE(greedy.greedy());
  for (const Shape& shape : shapes) {
    SCOPED_TRACE(::testing::Message() << "vocab " << shape.vocab << " rows " << shape.rows
                                      << " stride " << shape.stride);
    std::vector<SequenceSamplingState> states(shape.rows);
    std::vector<SamplingRow> rows;
    for (SequenceSamplingState& state : states) rows.push_back({&greedy, &state});
    std::vector<float> logits =
        RandomLogits(shape.rows, shape.vocab, shape.stride, /*quantized=*/true, rng_);
    // one row mostly -inf (a constrained row's look), its one finite value late
    for (int64_t i = 0; i < shape.vocab; ++i) logits[i] = -INFINITY;
    logits[shape.vocab - 2] = 1.0f;
    std::vector<float> cpu_logits;
    for (int32_t r = 0; r < shape.rows; ++r) {
      cpu_logits.insert(cpu_logits.end(), logits.begin() + r * shape.stride,
                        logits.begin() + r * shape.stride + shape.vocab);
    }
    SamplingContext ctx{.vocab_size = shape.vocab};
    std::vector<SampledToken> want = SampleBatch(cpu_logits, ctx, rows);
    DeviceBuffer device = *DeviceBuffer::Allocate(logits.size() * sizeof(float));
    TANDEM_CUDA_CHECK(cudaMemcpy(device.data(), logits.data(), logits.size() * sizeof(float),
                                 cudaMemcpyHostToDevice));
    auto sampler = *CudaSampler::Create({.vocab_size = shape.vocab, .max_num_rows = shape.rows});
    for (int pass = 0; pass < 2; ++pass) {
      absl::StatusOr<std::vector<SampledToken>> got =
          sampler->Sample({device.as<float>(), shape.stride}, ctx, rows, stream_.get());
      ASSERT_TRUE(got.ok()) << got.status();
      for (int32_t r = 0; r < shape.rows; ++r) {
        EXPECT_EQ((*got)[r].token_id, want[r].token_id) << "row " << r << " pass " << pass;
        EXPECT_FALSE((*got)[r].logprobs.has_value());
      }
    }
  }
}

// A greedy row whose logits are all NaN (a broken pass) is an error on both GPU paths, not
// a token id past the vocabulary.
TEST_F(CudaSamplerTest, AllNanGreedyRowIsAnError) {
  const int32_t vocab = 1000;
  std::vector<float> logits(2 * vocab, 0.5f);
  std::fill_n(logits.begin() + vocab, vocab, NAN);
  DeviceBuffer device = *DeviceBuffer::Allocate(logits.size() * sizeof(float));
  TANDEM_CUDA_CHECK(cudaMemcpy(device.data(), logits.data(), logits.size() * sizeof(float),
                               cudaMemcpyHostToDevice));
  SamplingParams plain, with_logprobs;
  plain.temperature = with_logprobs.temperature = 0.0f;
  with_logprobs.logprobs = 2;  // the fused kernel instead of the argmax kernel
  SamplingContext ctx{.vocab_size = vocab};
  auto sampler = *CudaSampler::Create({.vocab_size = vocab, .max_num_rows = 2});
  for (const SamplingParams* params : {&plain, &with_logprobs}) {
    std::vector<SequenceSamplingState> states(2);
    std::vector<SamplingRow> rows = {{params, &states[0]}, {params, &states[1]}};
    absl::StatusOr<std::vector<SampledToken>> got =
        sampler->Sample({device.as<float>(), vocab}, ctx, rows, stream_.get());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition) << got.status();
    EXPECT_NE(got.status().message().find("rows[1]"), std::string::npos) << got.status();
  }
}

TEST_F(CudaSamplerTest, ManySeededDrawsAgree) {
  // 256 rows x 4 steps of plain/top-p/top-k sampling on a 128256 vocabulary: the seeded draw
  // walks the same inverse CDF as the CPU.
  const int32_t vocab = 128256, num_rows = 256;
  std::vector<SamplingParams> params(num_rows);
  std::vector<SequenceSamplingState> states(num_rows);
  std::vector<SamplingRow> rows;
  for (int32_t r = 0; r < num_rows; ++r) {
    params[r].temperature = 0.6f + 0.1f * static_cast<float>(r % 8);
    if (r % 3 == 1) params[r].top_p = 0.95f;
    if (r % 3 == 2) params[r].top_k = 200;
    states[r] = MakeSequenceState(std::vector<int32_t>{1, 2, 3}, rng_());
    rows.push_back({&params[r], &states[r]});
  }
  auto sampler = *CudaSampler::Create({.vocab_size = vocab, .max_num_rows = num_rows});
  DeviceBuffer device = *DeviceBuffer::Allocate(size_t{num_rows} * vocab * sizeof(float));
  SamplingContext ctx{.vocab_size = vocab};
  int mismatches = 0;
  for (int step = 0; step < 4; ++step) {
    std::vector<float> logits = RandomLogits(num_rows, vocab, vocab, false, rng_);
    TANDEM_CUDA_CHECK(cudaMemcpy(device.data(), logits.data(), logits.size() * sizeof(float),
                                 cudaMemcpyHostToDevice));
    std::vector<SampledToken> want = SampleBatch(logits, ctx, rows);
    auto got = sampler->Sample({device.as<float>(), vocab}, ctx, rows, stream_.get());
    ASSERT_TRUE(got.ok()) << got.status();
    for (int32_t r = 0; r < num_rows; ++r) {
      if ((*got)[r].token_id != want[r].token_id) ++mismatches;
      AppendToken(states[r], want[r].token_id);
    }
  }
  std::cout << "draws " << 4 * num_rows << ", mismatches " << mismatches << "\n";
  EXPECT_EQ(mismatches, 0);
}

TEST_F(CudaSamplerTest, RejectsBadInputsNamingTheField) {
  const int32_t vocab = 1001;
  auto sampler = *CudaSampler::Create({.vocab_size = vocab, .max_num_rows = 2});
  DeviceBuffer device = *DeviceBuffer::Allocate(3 * vocab * sizeof(float));
  SamplingParams params;
  SequenceSamplingState state = MakeSequenceState(std::vector<int32_t>{1, 2}, 7);
  std::vector<SamplingRow> rows = {{&params, &state}};
  SamplingContext ctx{.vocab_size = vocab};
  auto message = [&](const DeviceLogits& logits, const SamplingContext& c,
                     std::span<const SamplingRow> r) {
    absl::StatusOr<std::vector<SampledToken>> got = sampler->Sample(logits, c, r, stream_.get());
    EXPECT_FALSE(got.ok());
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << got.status();
    return std::string(got.status().message());
  };
  EXPECT_NE(message({device.as<float>(), vocab - 1}, ctx, rows).find("row_stride"),
            std::string::npos);
  EXPECT_NE(message({nullptr, vocab}, ctx, rows).find("logits.values"), std::string::npos);
  SamplingContext wrong_vocab{.vocab_size = vocab + 1};
  EXPECT_NE(message({device.as<float>(), vocab}, wrong_vocab, rows).find("vocab_size"),
            std::string::npos);
  std::vector<SamplingRow> three(3, rows[0]);
  EXPECT_NE(message({device.as<float>(), vocab}, ctx, three).find("max_num_rows"),
            std::string::npos);
  SamplingParams bad_top_p;
  bad_top_p.top_p = 1.5f;
  std::vector<SamplingRow> bad_rows = {{&params, &state}, {&bad_top_p, &state}};
  EXPECT_NE(message({device.as<float>(), vocab}, ctx, bad_rows).find("rows[1].params: top_p"),
            std::string::npos);
  SamplingParams penalised;
  penalised.repetition_penalty = 1.2f;
  SequenceSamplingState outside = MakeSequenceState(std::vector<int32_t>{1, vocab}, 7);
  std::vector<SamplingRow> outside_rows = {{&penalised, &outside}};
  EXPECT_NE(message({device.as<float>(), vocab}, ctx, outside_rows).find("prompt_token_set"),
            std::string::npos);
  SamplingParams beams;
  beams.num_beams = 2;
  beams.temperature = 0.0f;
  std::vector<SamplingRow> beam_rows = {{&beams, &state}};
  EXPECT_NE(message({device.as<float>(), vocab}, ctx, beam_rows).find("num_beams"),
            std::string::npos);
  EXPECT_EQ(CudaSampler::Create({.vocab_size = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaSampler::Create({.vocab_size = vocab, .max_num_rows = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem
