#include "common/sampling/beam_search.h"

#include <cmath>
#include <string>
#include <vector>

#include "common/backend/cpu/cpu_model_runner.h"
#include "common/sampling/logprobs.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/batch_builder.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::BatchBuilder;
using ::tandem::testing::LogitsFor;
using ::tandem::testing::ShuffledBlocks;
using ::testing::ElementsAre;

// Log-prob rows of a toy model where beam b's next-token distribution is rows[b].
std::vector<float> LogRows(const std::vector<std::vector<float>>& probs) {
  std::vector<float> out;
  for (const auto& row : probs) {
    for (float p : row) out.push_back(std::log(p));
  }
  return out;
}

TEST(BeamSearchTest, ForksFromTheBestParentsAndFinishesOnEos) {
  // vocab: 0 = eos, 1, 2, 3
  BeamSearch search({.num_beams = 2,
                     .length_penalty = 1.0f,
                     .early_stopping = EarlyStopping::kEager,
                     .max_new_tokens = 5,
                     .eos_token_ids = {0},
                     .num_return_sequences = 2});
  EXPECT_EQ(search.num_running(), 1);
  std::vector<BeamFork> forks = search.Step(LogRows({{0.1f, 0.5f, 0.3f, 0.1f}}), 4);
  ASSERT_EQ(forks.size(), 2u);
  EXPECT_EQ(forks[0].parent, 0);
  EXPECT_EQ(forks[0].token_id, 1);
  EXPECT_EQ(forks[1].token_id, 2);
  EXPECT_THAT(search.running_tokens(1), ElementsAre(2));
  // beam 0 ([1]) -> eos 0.6 (finishes) or 3 0.4; beam 1 ([2]) -> 1 0.9.
  forks = search.Step(LogRows({{0.6f, 0.0f, 0.0f, 0.4f}, {0.05f, 0.9f, 0.05f, 0.0f}}), 4);
  ASSERT_EQ(search.finished().size(), 1u);
  EXPECT_THAT(search.finished()[0].token_ids, ElementsAre(1, 0));
  EXPECT_NEAR(search.finished()[0].score, (std::log(0.5) + std::log(0.6)) / 2, 1e-6);
  ASSERT_EQ(forks.size(), 2u);  // the running beams skip the finished continuation
  EXPECT_EQ(forks[0].parent, 1);
  EXPECT_EQ(forks[0].token_id, 1);
  EXPECT_EQ(forks[1].parent, 0);
  EXPECT_EQ(forks[1].token_id, 3);
  forks = search.Step(LogRows({{0.9f, 0.1f, 0.0f, 0.0f}, {0.9f, 0.1f, 0.0f, 0.0f}}), 4);
  EXPECT_TRUE(search.done());  // kEager: two hypotheses finished
  EXPECT_TRUE(forks.empty());
  std::vector<BeamHypothesis> best = search.Results();
  ASSERT_EQ(best.size(), 2u);
  EXPECT_GE(best[0].score, best[1].score);
}

TEST(BeamSearchTest, MaxNewTokensFinishesTheTopBeams) {
  BeamSearch search({.num_beams = 2,
                     .early_stopping = EarlyStopping::kNever,
                     .max_new_tokens = 2,
                     .eos_token_ids = {0},
                     .num_return_sequences = 2});
  search.Step(LogRows({{0.1f, 0.5f, 0.4f}}), 3);
  search.Step(LogRows({{0.1f, 0.5f, 0.4f}, {0.1f, 0.5f, 0.4f}}), 3);
  ASSERT_TRUE(search.done());
  std::vector<BeamHypothesis> best = search.Results();
  ASSERT_EQ(best.size(), 2u);
  EXPECT_THAT(best[0].token_ids, ElementsAre(1, 1));
  EXPECT_NEAR(best[0].sum_logprobs, 2 * std::log(0.5), 1e-6);
  EXPECT_NEAR(best[0].score, std::log(0.5), 1e-6);  // length 2, penalty 1
}

EarlyStopping ParseEarlyStopping(const nlohmann::json& value) {
  if (value.is_string()) return EarlyStopping::kNever;
  return value.get<bool>() ? EarlyStopping::kEager : EarlyStopping::kHeuristic;
}

// Runs the search with the CPU runner, recomputing each beam's full sequence every step
// with fresh block tables (the engine forks KV instead).
std::vector<BeamHypothesis> RunBeamSearch(CpuModelRunner& runner, const nlohmann::json& c) {
  std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
  BeamSearch search({.num_beams = c["num_beams"],
                     .length_penalty = c["length_penalty"],
                     .early_stopping = ParseEarlyStopping(c["early_stopping"]),
                     .max_new_tokens = c["max_new_tokens"],
                     .eos_token_ids = {c["eos_token_id"].get<int32_t>()},
                     .num_return_sequences = c["num_beams"]});
  for (uint32_t step = 0; !search.done(); ++step) {
    ShuffledBlocks blocks(runner.num_kv_blocks(), step);
    BatchBuilder batch(16);
    std::vector<std::vector<int32_t>> sequences;
    for (int32_t b = 0; b < search.num_running(); ++b) {
      sequences.push_back(prompt);
      const auto& tokens = search.running_tokens(b);
      sequences.back().insert(sequences.back().end(), tokens.begin(), tokens.end());
      batch.Add(sequences.back(), 0, blocks.Take(sequences.back().size(), 16), LogitsFor::kLast);
    }
    absl::StatusOr<LogitsView> logits = runner.Forward(batch.inputs());
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    std::vector<float> rows(logits->values.begin(), logits->values.end());
    for (int64_t b = 0; b < logits->num_rows; ++b) {
      LogSoftmaxInPlace(std::span(rows).subspan(b * logits->vocab_size, logits->vocab_size));
    }
    search.Step(rows, logits->vocab_size);
  }
  return search.Results();
}

class BeamSearchFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BeamSearchFixtureTest, MatchesTransformersSequencesAndScores) {
  auto runner =
      CpuModelRunner::Load(testing::FixturePath("models/" + GetParam()),
                           {.num_kv_blocks = 64, .block_size_tokens = 16, .num_threads = 2});
  ASSERT_TRUE(runner.ok()) << runner.status();
  nlohmann::json cases = testing::ReadJsonFixture("sampling/beam_search.json")[GetParam()];
  ASSERT_EQ(cases.size(), 9u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["early_stopping"].dump() + " length_penalty " + c["length_penalty"].dump() +
                 " prompt " + c["prompt_ids"].dump());
    std::vector<BeamHypothesis> got = RunBeamSearch(**runner, c);
    ASSERT_EQ(got.size(), c["sequences"].size());
    int32_t eos = c["eos_token_id"];
    size_t longest = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      std::vector<int32_t> want = c["sequences"][i].get<std::vector<int32_t>>();
      auto first_eos = std::find(want.begin(), want.end(), eos);
      if (first_eos != want.end()) {  // HF pads finished hypotheses with the eos id
        EXPECT_TRUE(std::all_of(first_eos, want.end(), [&](int32_t t) { return t == eos; }));
        want.erase(first_eos + 1, want.end());
      }
      EXPECT_EQ(got[i].token_ids, want) << "hypothesis " << i;
      EXPECT_NEAR(got[i].score, c["scores"][i].get<double>(), 1e-4) << "hypothesis " << i;
      longest = std::max(longest, got[i].token_ids.size());
    }
    EXPECT_EQ(longest, c["sequences"][0].size());  // HF crops to the longest hypothesis
  }
}

INSTANTIATE_TEST_SUITE_P(Models, BeamSearchFixtureTest,
                         ::testing::Values("llama3-tiny", "llama2-tiny"));

}  // namespace
}  // namespace tandem
