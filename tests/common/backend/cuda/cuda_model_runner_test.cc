// The CUDA backend against the Hugging Face reference recorded in tests/fixtures/models/*
// (which the CPU backend matches to 1e-4): teacher-forced logits within bf16 tolerance at
// every position, greedy continuations identical up to the first near-tie.
#include "common/backend/cuda/cuda_model_runner.h"
#include "common/backend/cuda/kernels/skinny_gemm.h"
#include "common/backend/cuda/backend_select.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>

#include "gtest/gtest.h"
#include "tests/common/backend/cuda/cuda_test_util.h"
#include "tests/testing/batch_builder.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::BatchBuilder;
using ::tandem::testing::LogitsFor;
using ::tandem::testing::ShuffledBlocks;

// Two metrics (docs/cuda_backend.md, "Accuracy"):
// - whole-tensor: ||out - ref|| / ||ref|| over every logit of every position of every
//   prompt: DESIGN's and the "teacher-forced relative error <= 1e-2".
// - per row: ||Δ|| / ||ref|| of each position's logits vector. The worst rows of these
//   fixtures sit above 1e-2 for any bf16 forward: Hugging Face transformers itself in bf16
//   on the H200 reaches 3.8e-2 (llama3-tiny) and 4.0e-2 (llama2-tiny) against the same fp32
//   goldens (scripts/gpu_check.sh measures it), this backend 1.5e-2 and 2.5e-2 (F16 weights
//   rounded to bf16). So every row is bounded at that bf16 floor, and the mean row error is
//   reported beside it.
constexpr double kWholeTensorTolerance = 1e-2;
constexpr double kRelativeTolerance = 3e-2;

struct Golden {
  std::vector<std::vector<int32_t>> prompts, greedy;
  std::vector<std::vector<float>> margins;  // reference top-1 minus top-2 at each greedy step
  std::vector<std::vector<float>> logits;   // [prompt][len * vocab]
};

Golden LoadGolden(const std::string& model) {
  Golden g;
  nlohmann::json json = testing::ReadJsonFixture("models/" + model + "/golden.json");
  auto file = SafetensorsFile::Open(testing::FixturePath("models/" + model + "/golden.safetensors"));
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return g;
  for (size_t i = 0; i < json["prompts"].size(); ++i) {
    g.prompts.push_back(json["prompts"][i]["ids"].get<std::vector<int32_t>>());
    g.greedy.push_back(json["prompts"][i]["greedy"].get<std::vector<int32_t>>());
    g.margins.push_back(json["prompts"][i]["greedy_margins"].get<std::vector<float>>());
    const TensorView& t = (*file)->tensors().at("prompt" + std::to_string(i) + ".logits");
    std::vector<float>& values = g.logits.emplace_back(t.NumElements());
    ConvertToFloat(t, values);
  }
  return g;
}

int32_t ArgMax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

class CudaRunnerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    int count = 0;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess) << "no CUDA device (gpu tests need one)";
    auto runner = CudaModelRunner::Load(testing::FixturePath("models/" + GetParam()),
                                        {.num_kv_blocks = 128, .max_num_tokens = 512,
                                         .max_num_seqs = 16, .max_logits_rows = 128});
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
    golden_ = LoadGolden(GetParam());
  }
  int64_t vocab() const { return runner_->config().vocab_size; }

  // Teacher-forced logits of every prompt; returns the worst row's relative error and
  // records the largest absolute logit error in `max_abs_error`.
  double TeacherForcedError(float& max_abs_error) {
    ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/1);
    double worst = 0.0, sum = 0.0, diff_squares = 0.0, ref_squares = 0.0;
    size_t rows = 0;
    max_abs_error = 0.0f;
    for (size_t p = 0; p < golden_.prompts.size(); ++p) {
      const std::vector<int32_t>& ids = golden_.prompts[p];
      BatchBuilder batch(16);
      batch.Add(ids, 0, blocks.Take(ids.size(), 16), LogitsFor::kAll);
      auto logits = runner_->Forward(batch.inputs());
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) return INFINITY;
      for (size_t r = 0; r < ids.size(); ++r) {
        std::span<const float> want = std::span(golden_.logits[p]).subspan(r * vocab(), vocab());
        double error = testing::RelativeError(logits->Row(r), want);
        EXPECT_LE(error, kRelativeTolerance) << "prompt " << p << " position " << r;
        worst = std::max(worst, error);
        sum += error;
        ++rows;
        for (int64_t i = 0; i < vocab(); ++i) {
          const double diff = static_cast<double>(logits->Row(r)[i]) - want[i];
          max_abs_error = std::max(max_abs_error, static_cast<float>(std::abs(diff)));
          diff_squares += diff * diff;
          ref_squares += static_cast<double>(want[i]) * want[i];
        }
      }
    }
    mean_error_ = rows > 0 ? sum / rows : 0.0;
    whole_error_ = std::sqrt(diff_squares / std::max(ref_squares, 1e-30));
    return worst;
  }
  double mean_error_ = 0.0, whole_error_ = 0.0;

  // All prompts prefilled in one batch, then decoded together (see the test below).
  void CheckBatchedGreedyDecode();

  std::unique_ptr<CudaModelRunner> runner_;
  Golden golden_;
};

TEST_P(CudaRunnerTest, PromptLogitsMatchReference) {
  float max_abs = 0.0f;
  double worst = TeacherForcedError(max_abs);
  std::cout << GetParam() << ": teacher-forced logits, whole-tensor relative error "
            << whole_error_ << "; worst row " << worst << ", mean row " << mean_error_
            << ", max |dlogit| " << max_abs << "\n";
  EXPECT_LE(whole_error_, kWholeTensorTolerance);
  RecordProperty("whole_tensor_relative_error", std::to_string(whole_error_));
  RecordProperty("worst_relative_error", std::to_string(worst));
}

// All prompts prefilled in one batch, then decoded together one token per step. Tokens must
// equal the reference until the first step whose reference margin is within twice the
// measured logit error (where bf16 rounding may legitimately flip the argmax).
TEST_P(CudaRunnerTest, BatchedGreedyDecodeMatchesReferenceUpToNearTie) { CheckBatchedGreedyDecode(); }

// The same passes with the skinny tensor-core GEMM (off by default: slower than cuBLASLt on
// the H200 so far) for every GEMM of up to 64 rows: the fixtures' prompts and the batched
// decode (6 rows) go through it, its fused SiLU·mul included.
TEST_P(CudaRunnerTest, SkinnyGemmPassesMatchReference) {
  runner_->set_skinny_gemm_max_rows(kSkinnyGemmMaxRows);
  float max_abs = 0.0f;
  TeacherForcedError(max_abs);
  EXPECT_LE(whole_error_, kWholeTensorTolerance);
  CheckBatchedGreedyDecode();
}

void CudaRunnerTest::CheckBatchedGreedyDecode() {
  float max_abs = 0.0f;
  TeacherForcedError(max_abs);
  const float near_tie = 2.0f * max_abs;
  const size_t num_seqs = golden_.prompts.size();
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/2);
  std::vector<std::vector<int32_t>> tables, generated(num_seqs);
  BatchBuilder prefill(16);
  for (size_t s = 0; s < num_seqs; ++s) {
    tables.push_back(blocks.Take(golden_.prompts[s].size() + 32, 16));
    prefill.Add(golden_.prompts[s], 0, tables[s], LogitsFor::kLast);
  }
  auto logits = runner_->Forward(prefill.inputs());
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (size_t s = 0; s < num_seqs; ++s) generated[s].push_back(ArgMax(logits->Row(s)));
  const size_t steps = golden_.greedy[0].size();
  for (size_t step = 1; step < steps; ++step) {
    BatchBuilder decode(16);
    for (size_t s = 0; s < num_seqs; ++s) {
      int32_t pos = static_cast<int32_t>(golden_.prompts[s].size() + step - 1);
      decode.Add(std::span(&generated[s].back(), 1), pos, tables[s], LogitsFor::kLast);
    }
    logits = runner_->Forward(decode.inputs());
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (size_t s = 0; s < num_seqs; ++s) generated[s].push_back(ArgMax(logits->Row(s)));
  }
  for (size_t s = 0; s < num_seqs; ++s) {
    size_t first_near_tie = steps;
    for (size_t i = 0; i < steps; ++i) {
      if (golden_.margins[s][i] < near_tie) { first_near_tie = i; break; }
    }
    size_t matched = 0;
    while (matched < steps && generated[s][matched] == golden_.greedy[s][matched]) ++matched;
    std::cout << GetParam() << " seq " << s << ": " << matched << "/" << steps
              << " greedy tokens match; first near-tie (margin < " << near_tie << ") at step "
              << first_near_tie << "\n";
    EXPECT_GE(matched, first_near_tie) << "seq " << s << " diverged before any near-tie";
  }
}

// The longest prompt prefilled in chunks of 7 tokens, mixed with a decode of another
// sequence in the same batch (the general attention path), matches the reference.
TEST_P(CudaRunnerTest, ChunkedPrefillMatchesReference) {
  size_t p = golden_.prompts.size() - 1;
  const std::vector<int32_t>& ids = golden_.prompts[p];
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/3);
  std::vector<int32_t> table = blocks.Take(ids.size(), 16);
  std::vector<int32_t> other = blocks.Take(golden_.prompts[0].size(), 16);
  for (size_t begin = 0; begin < ids.size(); begin += 7) {
    size_t end = std::min(ids.size(), begin + 7);
    BatchBuilder batch(16);
    batch.Add(std::span(ids).subspan(begin, end - begin), begin, table, LogitsFor::kAll);
    size_t other_len = std::min(golden_.prompts[0].size(), begin / 7 + 1);
    batch.Add(std::span(golden_.prompts[0]).subspan(other_len - 1, 1), other_len - 1, other,
              LogitsFor::kNone);
    auto logits = runner_->Forward(batch.inputs());
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (size_t r = 0; r < end - begin; ++r) {
      std::span<const float> want =
          std::span(golden_.logits[p]).subspan((begin + r) * vocab(), vocab());
      EXPECT_LE(testing::RelativeError(logits->Row(r), want), kRelativeTolerance)
          << "position " << begin + r;
    }
  }
}

// Only the logits rows pass the last layer's attention: a chunk without logits stops at its
// K/V write, a chunk with some rows carries just those (gathered in order) through the o
// projection, the MLP and the LM head. The longest prompt in two chunks: the first without
// logits, the second with logits for a few scattered rows; each must match the reference,
// and the first chunk's K/V must be complete for the second.
TEST_P(CudaRunnerTest, LogitsRowsSubsetsMatchReference) {
  const size_t p = golden_.prompts.size() - 1;
  const std::vector<int32_t>& ids = golden_.prompts[p];
  ASSERT_GE(ids.size(), 8u);
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/5);
  const std::vector<int32_t> table = blocks.Take(ids.size(), 16);
  const size_t split = ids.size() / 2;
  BatchBuilder first(16);
  first.Add(std::span(ids).first(split), 0, table, LogitsFor::kNone);
  auto logits = runner_->Forward(first.inputs());
  ASSERT_TRUE(logits.ok()) << logits.status();
  BatchBuilder second(16);
  second.Add(std::span(ids).subspan(split), static_cast<int32_t>(split), table, LogitsFor::kAll);
  ForwardInputs in = second.inputs();
  const int32_t count = static_cast<int32_t>(ids.size() - split);
  const std::vector<int32_t> rows = {1, count / 2, count - 1};
  in.logits_rows = rows;
  logits = runner_->Forward(in);
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (size_t i = 0; i < rows.size(); ++i) {
    std::span<const float> want =
        std::span(golden_.logits[p]).subspan((split + rows[i]) * vocab(), vocab());
    EXPECT_LE(testing::RelativeError(logits->Row(i), want), kRelativeTolerance)
        << "position " << split + rows[i];
  }
}

// An eager pass publishes every layer once its K/V write is enqueued, each with an event
// that has completed by the time Forward returns; the logits are unchanged.
TEST_P(CudaRunnerTest, PublishesEachLayersKvWriteWithAnEvent) {
  size_t p = golden_.prompts.size() - 1;
  const std::vector<int32_t>& ids = golden_.prompts[p];
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/4);
  std::vector<int32_t> table = blocks.Take(ids.size(), 16);
  BatchBuilder batch(16);
  batch.Add(ids, 0, table, LogitsFor::kAll);
  KvLayerProgress progress(runner_->config().num_layers);
  ForwardInputs in = batch.inputs();
  in.kv_progress = &progress;
  auto logits = runner_->Forward(in);
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (int64_t layer = 1; layer <= runner_->config().num_layers; ++layer) {
    absl::StatusOr<void*> written = progress.WaitForLayers(layer, absl::Now());  // no waiting
    ASSERT_TRUE(written.ok()) << "layer " << layer << ": " << written.status();
    ASSERT_NE(*written, nullptr);
    EXPECT_EQ(cudaEventQuery(static_cast<cudaEvent_t>(*written)), cudaSuccess);
  }
  for (size_t r = 0; r < ids.size(); ++r) {
    EXPECT_LE(testing::RelativeError(logits->Row(r),
                                     std::span(golden_.logits[p]).subspan(r * vocab(), vocab())),
              kRelativeTolerance)
        << "position " << r;
  }
}

// Decode steps through CUDA graphs (eager first step, captured second, replays after) give
// the logits of eager decode steps on the same inputs.
TEST_P(CudaRunnerTest, DecodeGraphsMatchEagerDecode) {
  const size_t num_seqs = golden_.prompts.size();
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/5);
  std::vector<std::vector<int32_t>> tables;
  BatchBuilder prefill(16);
  for (size_t s = 0; s < num_seqs; ++s) {
    tables.push_back(blocks.Take(golden_.prompts[s].size() + 8, 16));
    prefill.Add(golden_.prompts[s], 0, tables[s], LogitsFor::kNone);
  }
  ASSERT_TRUE(runner_->Forward(prefill.inputs()).ok());
  constexpr size_t kSteps = 5;
  std::vector<std::vector<float>> logits[2];
  for (int pass = 0; pass < 2; ++pass) {
    runner_->set_use_cuda_graphs(pass == 0);
    for (size_t step = 0; step < kSteps; ++step) {
      BatchBuilder decode(16);
      for (size_t s = 0; s < num_seqs; ++s) {
        int32_t pos = static_cast<int32_t>(golden_.prompts[s].size() + step);
        decode.Add(std::span(&golden_.greedy[s][step], 1), pos, tables[s], LogitsFor::kLast);
      }
      auto out = runner_->Forward(decode.inputs());
      ASSERT_TRUE(out.ok()) << out.status();
      logits[pass].emplace_back(out->values.begin(), out->values.end());
    }
    if (pass == 0) {
      EXPECT_EQ(runner_->num_cuda_graphs(), 1);
    }
  }
  for (size_t step = 0; step < kSteps; ++step) {
    EXPECT_LE(testing::RelativeError(logits[0][step], logits[1][step]), 2e-3) << "step " << step;
  }
}

// Pipelined steps on the device: each decode pass is queued before the previous pass's
// tokens are collected, its input tokens named as FedTokenId rows of the pending GPU
// sampling (greedy rows through the mapped argmax results, seeded rows with penalties through
// the sampler's device results). The tokens equal those of synchronous steps, with graphs
// and eagerly, and a fed id naming no pending row is refused.
TEST_P(CudaRunnerTest, FedTokensEqualSynchronousSampling) {
  const size_t num_seqs = golden_.prompts.size();
  constexpr int kSteps = 12;
  SamplingParams greedy, seeded;
  greedy.temperature = 0.0f;
  seeded.temperature = 0.8f;
  seeded.repetition_penalty = 1.2f;
  seeded.presence_penalty = 0.4f;
  const SamplingContext ctx{.vocab_size = vocab()};
  std::vector<int32_t> logits_rows(num_seqs);
  for (size_t s = 0; s < num_seqs; ++s) logits_rows[s] = static_cast<int32_t>(s);
  auto run = [&](bool fed, bool graphs) {
    runner_->set_use_cuda_graphs(graphs);
    ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/7);
    std::vector<std::vector<int32_t>> tables, generated(num_seqs);
    std::vector<SequenceSamplingState> states;
    std::vector<SamplingRow> rows;
    BatchBuilder prefill(16);
    for (size_t s = 0; s < num_seqs; ++s) {
      tables.push_back(blocks.Take(golden_.prompts[s].size() + kSteps + 1, 16));
      prefill.Add(golden_.prompts[s], 0, tables[s], LogitsFor::kLast);
      states.push_back(MakeSequenceState(golden_.prompts[s], 100 + s));
    }
    for (size_t s = 0; s < num_seqs; ++s) rows.push_back({s % 2 ? &seeded : &greedy, &states[s]});
    ForwardInputs in = prefill.inputs();
    in.logits_on_host = false;
    absl::StatusOr<LogitsView> logits = runner_->Forward(in);
    EXPECT_TRUE(logits.ok()) << logits.status();
    for (int step = 0; step < kSteps && logits.ok(); ++step) {
      std::vector<int32_t> ids(num_seqs);
      std::vector<SampledToken> tokens;
      if (fed) {
        EXPECT_TRUE(runner_->StartSampleLogits(*logits, logits_rows, ctx, rows).ok());
        for (size_t s = 0; s < num_seqs; ++s) ids[s] = FedTokenId(static_cast<int32_t>(s));
      } else {
        auto sampled = runner_->SampleLogits(*logits, logits_rows, ctx, rows);
        EXPECT_TRUE(sampled.ok()) << sampled.status();
        if (!sampled.ok()) return generated;
        tokens = std::move(*sampled);
        for (size_t s = 0; s < num_seqs; ++s) ids[s] = tokens[s].token_id;
      }
      if (fed && step == 0) {
        BatchBuilder bad(16);
        const int32_t past = FedTokenId(static_cast<int32_t>(num_seqs));
        bad.Add(std::span(&past, 1), static_cast<int32_t>(golden_.prompts[0].size()),
                tables[0], LogitsFor::kLast);
        EXPECT_TRUE(absl::IsInvalidArgument(runner_->Forward(bad.inputs()).status()));
      }
      BatchBuilder decode(16);
      for (size_t s = 0; s < num_seqs; ++s) {
        const auto pos = static_cast<int32_t>(golden_.prompts[s].size()) + step;
        decode.Add(std::span(&ids[s], 1), pos, tables[s], LogitsFor::kLast);
      }
      in = decode.inputs();
      in.logits_on_host = false;
      logits = runner_->Forward(in);  // fed: queued before the tokens are collected
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (fed) {
        auto sampled = runner_->FinishSampleLogits();
        EXPECT_TRUE(sampled.ok()) << sampled.status();
        if (!sampled.ok()) return generated;
        tokens = std::move(*sampled);
      }
      for (size_t s = 0; s < num_seqs; ++s) {
        generated[s].push_back(tokens[s].token_id);
        AppendToken(states[s], tokens[s].token_id);
      }
    }
    return generated;
  };
  const std::vector<std::vector<int32_t>> sync = run(false, true);
  EXPECT_EQ(run(true, true), sync);
  EXPECT_EQ(run(true, false), sync);
  EXPECT_TRUE(absl::IsFailedPrecondition(runner_->FinishSampleLogits().status()));
}

// Eager decode steps with logits for some rows or none (the last layer then carries fewer
// rows, or stops after its K/V write, which a decode step does inside the attention kernel):
// a pair of copies of a sequence with logits for copy 0 at steps 0 and 2 and for copy 1 at
// step 2 only, and a second pair with logits at every step (the same kernels at the last
// step), agree there, so every step wrote its K/V.
TEST_P(CudaRunnerTest, DecodeStepsWithFewerLogitsRowsStillWriteKv) {
  runner_->set_use_cuda_graphs(false);
  const std::vector<int32_t>& prompt = golden_.prompts[0];
  const std::vector<int32_t>& tokens = golden_.greedy[0];
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/7);
  std::vector<std::vector<int32_t>> tables;
  for (int copy = 0; copy < 4; ++copy) tables.push_back(blocks.Take(prompt.size() + 8, 16));
  BatchBuilder prefill(16);
  for (int copy = 0; copy < 4; ++copy) prefill.Add(prompt, 0, tables[copy], LogitsFor::kNone);
  ASSERT_TRUE(runner_->Forward(prefill.inputs()).ok());
  std::vector<float> last[2];
  for (size_t step = 0; step < 3; ++step) {
    const int32_t pos = static_cast<int32_t>(prompt.size() + step);
    for (int pair = 0; pair < 2; ++pair) {
      const bool every = pair == 1;
      BatchBuilder batch(16);
      batch.Add(std::span(&tokens[step], 1), pos, tables[2 * pair],
                every || step != 1 ? LogitsFor::kLast : LogitsFor::kNone);
      batch.Add(std::span(&tokens[step], 1), pos, tables[2 * pair + 1],
                every || step == 2 ? LogitsFor::kLast : LogitsFor::kNone);
      auto out = runner_->Forward(batch.inputs());
      ASSERT_TRUE(out.ok()) << out.status();
      if (step == 2) last[pair].assign(out->values.begin(), out->values.end());
    }
  }
  ASSERT_EQ(last[0].size(), last[1].size());
  // The same kernels on the same K/V: equal up to fp32 noise; a missed K/V write of a step
  // moves the logits by far more than the bf16 tolerance.
  EXPECT_LE(testing::RelativeError(last[0], last[1]), 1e-4);
}

// A fork: the prompt's blocks copied with CopyBlocks, the last token decoded against the
// copy, matches the reference; the copied K is bit-identical; bad block ids are refused.
TEST_P(CudaRunnerTest, CopyBlocksForksASequence) {
  const std::vector<int32_t>& ids = golden_.prompts.back();
  const size_t n = ids.size();
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/6);
  std::vector<int32_t> original = blocks.Take(n, 16), fork = blocks.Take(n, 16);
  BatchBuilder prefill(16);
  prefill.Add(std::span(ids).subspan(0, n - 1), 0, original, LogitsFor::kNone);
  ASSERT_TRUE(runner_->Forward(prefill.inputs()).ok());
  std::vector<BlockCopy> copies;
  for (size_t i = 0; i < original.size(); ++i) copies.push_back({original[i], fork[i]});
  ASSERT_TRUE(runner_->CopyBlocks(copies).ok());
  const PagedKvCache kv = runner_->layer_kv(runner_->config().num_layers - 1);
  const size_t block_elements = 16 * kv.num_kv_heads * kv.head_dim;
  std::vector<uint16_t> a(block_elements), b(block_elements);
  ASSERT_EQ(cudaMemcpy(a.data(), kv.k + original[0] * block_elements, block_elements * 2,
                       cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(b.data(), kv.k + fork[0] * block_elements, block_elements * 2,
                       cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(a, b);
  BatchBuilder decode(16);
  decode.Add(std::span(ids).subspan(n - 1, 1), static_cast<int32_t>(n - 1), fork,
             LogitsFor::kLast);
  auto logits = runner_->Forward(decode.inputs());
  ASSERT_TRUE(logits.ok()) << logits.status();
  std::span<const float> want = std::span(golden_.logits.back()).subspan((n - 1) * vocab(), vocab());
  EXPECT_LE(testing::RelativeError(logits->Row(0), want), kRelativeTolerance);
  const int32_t past = static_cast<int32_t>(runner_->num_kv_blocks());
  EXPECT_EQ(runner_->CopyBlocks(std::vector<BlockCopy>{{0, past}}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(CudaRunnerTest, RejectsBatchesOverItsLimits) {
  std::vector<int32_t> ids(600, 3);
  BatchBuilder batch(16);
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/4);
  batch.Add(std::span(ids).subspan(0, 513), 0, blocks.Take(513, 16), LogitsFor::kLast);
  auto logits = runner_->Forward(batch.inputs());
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaRunnerTest, ::testing::Values("llama3-tiny", "llama2-tiny"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// The KV pool is sized from gpu_memory_fraction and reported; bad fractions are refused.
TEST(CudaRunnerMemoryTest, KvPoolSizedFromMemoryFraction) {
  const std::string dir = testing::FixturePath("models/llama3-tiny");
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  const double used = 1.0 - static_cast<double>(free_bytes) / static_cast<double>(total_bytes);
  auto runner = CudaModelRunner::Load(dir, {.gpu_memory_fraction = used + 0.02});
  ASSERT_TRUE(runner.ok()) << runner.status();
  const CudaMemoryReport& report = (*runner)->memory_report();
  std::cout << report.ToString() << "\n";
  EXPECT_GT(report.num_kv_blocks, 0);
  EXPECT_EQ(report.num_kv_tokens, report.num_kv_blocks * 16);
  EXPECT_EQ(report.kv_pool_bytes, report.num_kv_blocks * (*runner)->kv_layout().kv_bytes_per_block());
  EXPECT_LE(report.kv_pool_bytes, static_cast<size_t>(0.02 * total_bytes) + (1u << 20));
  EXPECT_EQ((*runner)->kv_layout().dtype, DType::kBF16);
  runner->reset();

  EXPECT_EQ(CudaModelRunner::Load(dir, {.gpu_memory_fraction = 1.5}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CudaModelRunner::Load(dir, {.gpu_memory_fraction = used / 2}).status().code(),
            absl::StatusCode::kResourceExhausted);
  absl::Status bad = CudaModelRunner::Load(dir, {.gemm_candidates = 0}).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("gemm_candidates"), std::string::npos) << bad;
}


// host_visible_kv: the KV pool is managed memory and the TCP transport's host view reaches
// it. A prefill on the GPU, then a host-side "transfer" (memcpy of every layer's K/V blocks
// through the view, as TcpKvReceiver/TcpKvSender do) into other blocks, then a decode from the
// copies must match the reference; the view's bytes equal the device's.
TEST(CudaRunnerHostKvTest, HostViewCarriesKvBothWays) {
  const std::string model = "llama3-tiny";
  auto loaded = CudaModelRunner::Load(testing::FixturePath("models/" + model),
                                      {.num_kv_blocks = 64, .max_num_tokens = 256,
                                       .max_num_seqs = 8, .max_logits_rows = 64,
                                       .host_visible_kv = true});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  CudaModelRunner& runner = **loaded;
  auto view = runner.host_kv_view();
  ASSERT_TRUE(view.ok()) << view.status();
  ASSERT_EQ(view->num_blocks, runner.num_kv_blocks());
  Golden golden = LoadGolden(model);
  const int64_t vocab = runner.config().vocab_size;
  const std::vector<int32_t>& ids = golden.prompts.back();
  const size_t n = ids.size();
  ShuffledBlocks blocks(runner.num_kv_blocks(), /*seed=*/9);
  std::vector<int32_t> original = blocks.Take(n, 16), moved = blocks.Take(n, 16);
  BatchBuilder prefill(16);
  prefill.Add(std::span(ids).subspan(0, n - 1), 0, original, LogitsFor::kNone);
  ASSERT_TRUE(runner.Forward(prefill.inputs()).ok());
  const size_t block_bytes = view->layout.BytesPerBlockPerLayer();
  const PagedKvCache last = runner.layer_kv(runner.config().num_layers - 1);
  std::vector<std::byte> device_copy(block_bytes);
  ASSERT_EQ(cudaMemcpy(device_copy.data(),
                       reinterpret_cast<const std::byte*>(last.v) + original[0] * block_bytes,
                       block_bytes, cudaMemcpyDefault), cudaSuccess);
  EXPECT_EQ(std::memcmp(device_copy.data(),
                        view->VBlock(runner.config().num_layers - 1, original[0]), block_bytes),
            0);
  for (int64_t layer = 0; layer < view->layout.num_layers; ++layer) {
    for (size_t i = 0; i < original.size(); ++i) {
      std::memcpy(view->KBlock(layer, moved[i]), view->KBlock(layer, original[i]), block_bytes);
      std::memcpy(view->VBlock(layer, moved[i]), view->VBlock(layer, original[i]), block_bytes);
      std::memset(view->KBlock(layer, original[i]), 0x7f, block_bytes);  // poison the source
    }
  }
  BatchBuilder decode(16);
  decode.Add(std::span(ids).subspan(n - 1, 1), static_cast<int32_t>(n - 1), moved,
             LogitsFor::kLast);
  auto logits = runner.Forward(decode.inputs());
  ASSERT_TRUE(logits.ok()) << logits.status();
  std::span<const float> want = std::span(golden.logits.back()).subspan((n - 1) * vocab, vocab);
  EXPECT_LE(testing::RelativeError(logits->Row(0), want), kRelativeTolerance);

  auto plain = CudaModelRunner::Load(testing::FixturePath("models/" + model),
                                     {.num_kv_blocks = 8, .max_num_tokens = 64});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*plain)->host_kv_view().status().code(), absl::StatusCode::kFailedPrecondition);
}

// --backend=cuda through the selection entry point the workers and `tandem generate` use.
TEST(CudaRunnerHostKvTest, SelectedCudaRunnerGivesHostView) {
  auto selected = LoadSelectedRunner(testing::FixturePath("models/llama3-tiny"),
                                     {.backend = BackendKind::kCuda, .num_kv_blocks = 32,
                                      .max_num_tokens = 128, .max_num_seqs = 4,
                                      .kv_view = KvViewKind::kHost});
  ASSERT_TRUE(selected.ok()) << selected.status();
  EXPECT_EQ(selected->kv_view.num_blocks, 32);
  EXPECT_EQ(selected->kv_view.k.size(), static_cast<size_t>(selected->runner->config().num_layers));
  EXPECT_EQ(selected->runner->num_kv_blocks(), 32);
  EXPECT_EQ(LoadSelectedRunner(testing::FixturePath("models/llama3-tiny"),
                               {.backend = BackendKind::kCuda, .gpu_memory_fraction = 0.0})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tandem
