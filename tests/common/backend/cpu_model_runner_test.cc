// The CPU backend against the Hugging Face reference recorded in tests/fixtures/models/*.
#include "common/backend/cpu/cpu_model_runner.h"

#include <algorithm>
#include <cmath>
#include <iostream>

#include "common/backend/reference/rope.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/batch_builder.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::BatchBuilder;
using ::tandem::testing::LogitsFor;
using ::tandem::testing::ShuffledBlocks;

constexpr float kLogitTolerance = 1e-4f;

struct Golden {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> greedy;
  std::vector<std::vector<float>> logits;  // [prompt][len * vocab]
  std::vector<float> inv_freq;
};

Golden LoadGolden(const std::string& model) {
  Golden g;
  nlohmann::json json = testing::ReadJsonFixture("models/" + model + "/golden.json");
  auto file = SafetensorsFile::Open(testing::FixturePath("models/" + model + "/golden.safetensors"));
  EXPECT_TRUE(file.ok()) << file.status();
  for (size_t i = 0; i < json["prompts"].size(); ++i) {
    g.prompts.push_back(json["prompts"][i]["ids"].get<std::vector<int32_t>>());
    g.greedy.push_back(json["prompts"][i]["greedy"].get<std::vector<int32_t>>());
    const TensorView& t = (*file)->tensors().at("prompt" + std::to_string(i) + ".logits");
    std::vector<float>& values = g.logits.emplace_back(t.NumElements());
    ConvertToFloat(t, values);
  }
  g.inv_freq = json["inv_freq"].get<std::vector<float>>();
  return g;
}

float MaxAbsDiff(std::span<const float> a, std::span<const float> b) {
  float worst = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

int32_t ArgMax(std::span<const float> row) {
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

class CpuRunnerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto runner = CpuModelRunner::Load(testing::FixturePath("models/" + GetParam()),
                                       {.num_kv_blocks = 128, .block_size_tokens = 16});
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
    golden_ = LoadGolden(GetParam());
  }
  int64_t vocab() const { return runner_->config().vocab_size; }

  std::unique_ptr<CpuModelRunner> runner_;
  Golden golden_;
};

TEST_P(CpuRunnerTest, RopeFrequenciesMatchReference) {
  std::vector<float> ours = reference::RopeInverseFrequencies(runner_->config());
  ASSERT_EQ(ours.size(), golden_.inv_freq.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_NEAR(ours[i], golden_.inv_freq[i], 1e-6f * golden_.inv_freq[i]) << "i=" << i;
  }
}

TEST_P(CpuRunnerTest, PromptLogitsMatchReference) {
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/1);
  float worst = 0.0f;
  for (size_t p = 0; p < golden_.prompts.size(); ++p) {
    const std::vector<int32_t>& ids = golden_.prompts[p];
    BatchBuilder batch(16);
    batch.Add(ids, 0, blocks.Take(ids.size(), 16), LogitsFor::kAll);
    auto logits = runner_->Forward(batch.inputs());
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->num_rows, static_cast<int64_t>(ids.size()));
    float diff = MaxAbsDiff(logits->values, golden_.logits[p]);
    worst = std::max(worst, diff);
    EXPECT_LE(diff, kLogitTolerance) << "prompt " << p;
  }
  RecordProperty("max_abs_logit_diff", std::to_string(worst));
  std::cout << GetParam() << ": max |dlogit| vs transformers = " << worst << "\n";
}

// All prompts prefilled in one batch, then decoded together one token per step: every
// sequence must follow its reference greedy continuation exactly.
TEST_P(CpuRunnerTest, BatchedGreedyDecodeMatchesReference) {
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
  for (int step = 1; step < 32; ++step) {
    BatchBuilder decode(16);
    for (size_t s = 0; s < num_seqs; ++s) {
      int32_t pos = static_cast<int32_t>(golden_.prompts[s].size()) + step - 1;
      decode.Add(std::span(&generated[s].back(), 1), pos, tables[s], LogitsFor::kLast);
    }
    logits = runner_->Forward(decode.inputs());
    ASSERT_TRUE(logits.ok()) << logits.status();
    for (size_t s = 0; s < num_seqs; ++s) generated[s].push_back(ArgMax(logits->Row(s)));
  }
  for (size_t s = 0; s < num_seqs; ++s) EXPECT_EQ(generated[s], golden_.greedy[s]) << "seq " << s;
}

// Pipelined steps through the runner's seam: each decode pass is called before the previous
// pass's tokens are collected, its input tokens named as FedTokenId rows of the pending
// sampling. Same tokens as the reference; fed ids that name no pending row are refused.
TEST_P(CpuRunnerTest, FedTokensDecodeMatchesReference) {
  const size_t num_seqs = golden_.prompts.size();
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/3);
  std::vector<std::vector<int32_t>> tables, generated(num_seqs);
  BatchBuilder prefill(16);
  for (size_t s = 0; s < num_seqs; ++s) {
    tables.push_back(blocks.Take(golden_.prompts[s].size() + 32, 16));
    prefill.Add(golden_.prompts[s], 0, tables[s], LogitsFor::kLast);
  }
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  std::vector<SequenceSamplingState> states;
  for (size_t s = 0; s < num_seqs; ++s) states.push_back(MakeSequenceState(golden_.prompts[s], 1));
  std::vector<SamplingRow> rows;
  std::vector<int32_t> logits_rows;
  for (size_t s = 0; s < num_seqs; ++s) {
    rows.push_back({&greedy, &states[s]});
    logits_rows.push_back(static_cast<int32_t>(s));
  }
  const SamplingContext ctx{.vocab_size = vocab()};

  absl::StatusOr<LogitsView> logits = runner_->Forward(prefill.inputs());
  ASSERT_TRUE(logits.ok()) << logits.status();
  // Without a pending sampling a fed id is just an id outside the vocabulary.
  BatchBuilder stray(16);
  const int32_t fed0 = FedTokenId(0);
  stray.Add(std::span(&fed0, 1), static_cast<int32_t>(golden_.prompts[0].size()), tables[0],
            LogitsFor::kLast);
  EXPECT_THAT(std::string(runner_->Forward(stray.inputs()).status().message()),
              ::testing::HasSubstr("token_ids[0] = -1 outside"));
  logits = runner_->Forward(prefill.inputs());
  ASSERT_TRUE(logits.ok()) << logits.status();
  for (int step = 0; step < 32; ++step) {
    ASSERT_TRUE(runner_->StartSampleLogits(*logits, logits_rows, ctx, rows).ok());
    EXPECT_TRUE(absl::IsFailedPrecondition(
        runner_->StartSampleLogits(*logits, logits_rows, ctx, rows)));  // one at a time
    if (step == 0) {
      const int32_t past = FedTokenId(static_cast<int32_t>(num_seqs));
      BatchBuilder bad(16);
      bad.Add(std::span(&past, 1), static_cast<int32_t>(golden_.prompts[0].size()), tables[0],
              LogitsFor::kLast);
      EXPECT_THAT(std::string(runner_->Forward(bad.inputs()).status().message()),
                  ::testing::HasSubstr("names no row of the pending sampling"));
    }
    BatchBuilder decode(16);
    std::vector<int32_t> fed(num_seqs);
    for (size_t s = 0; s < num_seqs; ++s) {
      fed[s] = FedTokenId(static_cast<int32_t>(s));
      int32_t pos = static_cast<int32_t>(golden_.prompts[s].size()) + step;
      decode.Add(std::span(&fed[s], 1), pos, tables[s], LogitsFor::kLast);
    }
    if (step < 31) logits = runner_->Forward(decode.inputs());  // before the tokens are read
    ASSERT_TRUE(logits.ok()) << logits.status();
    absl::StatusOr<std::vector<SampledToken>> tokens = runner_->FinishSampleLogits();
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    ASSERT_EQ(tokens->size(), num_seqs);
    for (size_t s = 0; s < num_seqs; ++s) {
      generated[s].push_back((*tokens)[s].token_id);
      AppendToken(states[s], (*tokens)[s].token_id);
    }
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(runner_->FinishSampleLogits().status()));
  for (size_t s = 0; s < num_seqs; ++s) EXPECT_EQ(generated[s], golden_.greedy[s]) << "seq " << s;
}

// The longest prompt prefilled in chunks of 7 tokens, mixed with a decode of another
// sequence in the same batch, gives the same logits as one whole prefill.
TEST_P(CpuRunnerTest, ChunkedPrefillMatchesReference) {
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
    std::span<const float> expected =
        std::span(golden_.logits[p]).subspan(begin * vocab(), (end - begin) * vocab());
    EXPECT_LE(MaxAbsDiff(logits->values, expected), kLogitTolerance) << "chunk at " << begin;
  }
}

// A forward pass publishes every layer once its K/V is written (prefill overlap), with no
// device event (host memory: written already), and the logits are unchanged.
TEST_P(CpuRunnerTest, PublishesEachLayersKvWrite) {
  const std::vector<int32_t>& ids = golden_.prompts[0];
  ShuffledBlocks blocks(runner_->num_kv_blocks(), /*seed=*/4);
  std::vector<int32_t> table = blocks.Take(ids.size(), 16);
  BatchBuilder batch(16);
  batch.Add(ids, 0, table, LogitsFor::kAll);
  KvLayerProgress progress(runner_->config().num_layers);
  ForwardInputs in = batch.inputs();
  in.kv_progress = &progress;
  auto logits = runner_->Forward(in);
  ASSERT_TRUE(logits.ok()) << logits.status();
  absl::StatusOr<void*> written =
      progress.WaitForLayers(runner_->config().num_layers, absl::Now());  // no waiting
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, nullptr);
  EXPECT_LE(MaxAbsDiff(logits->values, std::span(golden_.logits[0]).subspan(0, ids.size() * vocab())),
            kLogitTolerance);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CpuRunnerTest, ::testing::Values("llama3-tiny", "llama2-tiny"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace tandem
