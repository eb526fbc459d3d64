// ModelRunner's host defaults of the sampling seam the engine uses (SampleLogits,
// CopyLogitsRows): exactly SampleBatch on copies of the named rows, rows named twice
// sampled independently, the logits left as they were, and bad calls refused; and the
// engine's answer to a failed sampling call.
#include <random>

#include "common/backend/cpu/cpu_model_runner.h"
#include "common/backend/model_runner.h"
#include "common/engine/engine.h"
#include "common/sampling/sampler.h"
#include "common/status.h"
#include "gtest/gtest.h"
#include "tests/testing/collecting_sink.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

constexpr int64_t kVocab = 97;

// A runner whose "forward pass" returns fixed random logits rows.
class FixedLogitsRunner final : public ModelRunner {
 public:
  explicit FixedLogitsRunner(int64_t num_rows) : logits_(num_rows * kVocab) {
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    for (float& v : logits_) v = normal(rng);
  }
  absl::StatusOr<LogitsView> Forward(const ForwardInputs&) override {
    return LogitsView{.values = logits_,
                      .num_rows = static_cast<int64_t>(logits_.size()) / kVocab,
                      .vocab_size = kVocab};
  }
  const ModelConfig& config() const override { return config_; }
  const KvLayout& kv_layout() const override { return layout_; }
  int64_t num_kv_blocks() const override { return 0; }
  const std::vector<float>& logits() const { return logits_; }

 private:
  std::vector<float> logits_;
  ModelConfig config_;
  KvLayout layout_;
};

TEST(SampleLogitsTest, DefaultIsSampleBatchOnCopiesOfTheNamedRows) {
  FixedLogitsRunner runner(/*num_rows=*/4);
  const std::vector<float> before = runner.logits();
  LogitsView view = *runner.Forward({});
  SamplingParams greedy, seeded, top_p;
  greedy.temperature = 0.0f;
  greedy.logprobs = 3;
  seeded.logprobs = 1;
  top_p.top_p = 0.5f;
  std::vector<SequenceSamplingState> states = {MakeSequenceState(std::vector<int32_t>{1, 2}, 7),
                                               MakeSequenceState(std::vector<int32_t>{1, 2}, 8),
                                               MakeSequenceState(std::vector<int32_t>{3}, 9),
                                               MakeSequenceState(std::vector<int32_t>{4}, 10)};
  std::vector<SamplingRow> rows = {
      {&greedy, &states[0]}, {&seeded, &states[1]}, {&seeded, &states[2]}, {&top_p, &states[3]}};
  // Rows 2, 0, 0 (a fan-out: two samples of one row), 3; row 1 is not sampled.
  const std::vector<int32_t> logits_rows = {2, 0, 0, 3};
  absl::StatusOr<std::vector<SampledToken>> got =
      runner.SampleLogits(view, logits_rows, {.vocab_size = kVocab}, rows);
  ASSERT_TRUE(got.ok()) << got.status();

  std::vector<float> copies;
  for (int32_t r : logits_rows) {
    copies.insert(copies.end(), before.begin() + r * kVocab, before.begin() + (r + 1) * kVocab);
  }
  std::vector<SampledToken> want = SampleBatch(copies, {.vocab_size = kVocab}, rows);
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*got)[i].token_id, want[i].token_id) << "row " << i;
    ASSERT_EQ((*got)[i].logprobs.has_value(), want[i].logprobs.has_value());
    if (want[i].logprobs) {
      EXPECT_EQ((*got)[i].logprobs->chosen.logprob, want[i].logprobs->chosen.logprob);
      EXPECT_EQ((*got)[i].logprobs->top.size(), want[i].logprobs->top.size());
    }
  }
  EXPECT_EQ(runner.logits(), before);  // the default samples copies

  std::vector<float> out(2 * kVocab);
  ASSERT_TRUE(runner.CopyLogitsRows(view, std::vector<int32_t>{3, 1}, out).ok());
  EXPECT_TRUE(std::equal(out.begin(), out.begin() + kVocab, before.begin() + 3 * kVocab));
  EXPECT_TRUE(std::equal(out.begin() + kVocab, out.end(), before.begin() + 1 * kVocab));
}

TEST(SampleLogitsTest, BadCallsAreRefused) {
  FixedLogitsRunner runner(/*num_rows=*/2);
  LogitsView view = *runner.Forward({});
  SamplingParams params, beams;
  beams.temperature = 0.0f;
  beams.num_beams = 2;
  SequenceSamplingState state = MakeSequenceState(std::vector<int32_t>{1}, 1);
  std::vector<SamplingRow> one = {{&params, &state}};
  const SamplingContext ctx{.vocab_size = kVocab};
  EXPECT_EQ(runner.SampleLogits(view, std::vector<int32_t>{2}, ctx, one).status().message(),
            "logits_rows[0] must be in [0, 2), got 2");
  EXPECT_EQ(runner.SampleLogits(view, std::vector<int32_t>{0, 1}, ctx, one).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<SamplingRow> beam_row = {{&beams, &state}};
  EXPECT_EQ(runner.SampleLogits(view, std::vector<int32_t>{0}, ctx, beam_row).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A view without host values (ForwardInputs::logits_on_host = false on a device runner).
  LogitsView device_only{.num_rows = 2, .vocab_size = kVocab};
  EXPECT_EQ(runner.SampleLogits(device_only, std::vector<int32_t>{0}, ctx, one).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<float> out(kVocab);
  EXPECT_EQ(runner.CopyLogitsRows(view, std::vector<int32_t>{0, 1}, out).code(),
            absl::StatusCode::kInvalidArgument);
}

// The CPU runner, except that SampleLogits fails on call `fail_call` (0-based). Sampling
// goes through this runner's default Start/FinishSampleLogits, so it resolves fed ids.
class FailingSampleRunner final : public ModelRunner {
 public:
  FailingSampleRunner(std::unique_ptr<ModelRunner> inner, int fail_call)
      : inner_(std::move(inner)), fail_call_(fail_call) {}
  absl::StatusOr<LogitsView> Forward(const ForwardInputs& inputs) override {
    ForwardInputs resolved = inputs;
    TANDEM_RETURN_IF_ERROR(ResolveFedTokens(inputs.token_ids, ids_));
    resolved.token_ids = ids_;
    return inner_->Forward(resolved);
  }
  absl::StatusOr<std::vector<SampledToken>> SampleLogits(
      const LogitsView& logits, std::span<const int32_t> logits_rows, const SamplingContext& ctx,
      std::span<const SamplingRow> rows) override {
    if (calls_++ == fail_call_) return absl::UnavailableError("device lost");
    return inner_->SampleLogits(logits, logits_rows, ctx, rows);
  }
  const ModelConfig& config() const override { return inner_->config(); }
  const KvLayout& kv_layout() const override { return inner_->kv_layout(); }
  int64_t num_kv_blocks() const override { return inner_->num_kv_blocks(); }

 private:
  std::unique_ptr<ModelRunner> inner_;
  int fail_call_;
  int calls_ = 0;
  std::vector<int32_t> ids_;
};

// Step timeline (one greedy request, 8 tokens): call 0 samples token 1 (prefill), call 1
// token 2, call 2 fails: the request ends with an abort naming the failure and frees its
// blocks; the next request is served normally. Pipelined, call 2 fails after the pass it
// samples was launched: the blocks wait for that pass, then are freed all the same.
class FailedSamplingTest : public ::testing::TestWithParam<bool> {};

TEST_P(FailedSamplingTest, EngineAbortsTheRequestsOfAFailedSamplingCall) {
  const std::string model = testing::FixturePath("models/llama3-tiny");
  auto cpu = CpuModelRunner::Load(model, {.num_kv_blocks = 32, .num_threads = 1});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto tokenizer = Tokenizer::Load(model);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  Engine engine({.pipeline_steps = GetParam()},
                std::make_unique<FailingSampleRunner>(std::move(*cpu), /*fail_call=*/2),
                std::move(*tokenizer));
  auto run = [&](const std::string& id) {
    auto sink = std::make_shared<testing::CollectingSink>();
    EngineRequest r{.request_id = id, .prompt_ids = {5, 6, 7, 8}, .sink = sink};
    r.params.temperature = 0.0f;
    r.params.max_tokens = 8;
    r.params.ignore_eos = true;
    EXPECT_TRUE(engine.AddRequest(r).ok());
    for (int i = 0; i < 100 && engine.Step(); ++i) {
    }
    return sink;
  };
  std::shared_ptr<testing::CollectingSink> failed = run("a");
  ASSERT_EQ(failed->outputs.size(), 3u);
  EXPECT_EQ(failed->outputs[1].token_ids.size(), 1u);
  EXPECT_EQ(failed->outputs.back().finish, OutputFinish::kAbort);
  EXPECT_EQ(failed->outputs.back().status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(failed->outputs.back().status.message(), "sampling failed: device lost");
  EXPECT_EQ(engine.stats().num_blocks_free, 32);
  std::shared_ptr<testing::CollectingSink> served = run("b");
  ASSERT_FALSE(served->outputs.empty());
  EXPECT_EQ(served->outputs.back().finish, OutputFinish::kLength);
  EXPECT_EQ(served->outputs.back().num_output_tokens, 8);
  EXPECT_EQ(engine.stats().num_pipelined_steps > 0, GetParam());
  EXPECT_EQ(engine.stats().num_blocks_free, 32);
}

INSTANTIATE_TEST_SUITE_P(Steps, FailedSamplingTest, ::testing::Bool(),
                         [](const auto& info) {
                           return std::string(info.param ? "pipelined" : "synchronous");
                         });

}  // namespace
}  // namespace tandem
