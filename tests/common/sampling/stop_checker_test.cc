#include "common/sampling/stop_checker.h"

#include <memory>
#include <string>
#include <vector>

#include "common/sampling/stop_strings.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

TEST(StopStringsTest, HoldsBackAPartialMatchAcrossPieces) {
  std::vector<std::string> stops = {"STOP"};
  std::string held;
  StopStringMatch m = MatchStopStrings(held, stops, "hello S", false);
  EXPECT_EQ(m.released, "hello ");
  EXPECT_EQ(held, "S");
  m = MatchStopStrings(held, stops, "T", false);
  EXPECT_EQ(m.released, "");
  EXPECT_EQ(held, "ST");
  m = MatchStopStrings(held, stops, "OP and more", false);
  EXPECT_TRUE(m.matched);
  EXPECT_EQ(m.stop, "STOP");
  EXPECT_EQ(m.released, "");  // the stop string and what follows are dropped
  EXPECT_EQ(held, "");
}

TEST(StopStringsTest, AFalseStartIsReleased) {
  std::vector<std::string> stops = {"STOP"};
  std::string held;
  EXPECT_EQ(MatchStopStrings(held, stops, "ST", false).released, "");
  StopStringMatch m = MatchStopStrings(held, stops, "AR", false);
  EXPECT_FALSE(m.matched);
  EXPECT_EQ(m.released, "STAR");
  EXPECT_EQ(held, "");
}

TEST(StopStringsTest, EarliestMatchWinsAndCanBeIncluded) {
  std::vector<std::string> stops = {"world", "lo w", "o"};
  std::string held;
  StopStringMatch m = MatchStopStrings(held, stops, "hello world", true);
  EXPECT_TRUE(m.matched);
  EXPECT_EQ(m.stop, "lo w");  // at byte 3, before "o" (4) and "world" (6)
  EXPECT_EQ(m.released, "hello w");
}

TEST(StopStringsTest, IncludedStopStringIsKept) {
  std::vector<std::string> stops = {"\n\n"};
  std::string held;
  EXPECT_EQ(MatchStopStrings(held, stops, "a\n", true).released, "a");
  StopStringMatch m = MatchStopStrings(held, stops, "\nb", true);
  EXPECT_TRUE(m.matched);
  EXPECT_EQ(m.released, "\n\n");
}

class StopCheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = Tokenizer::Load(testing::FixturePath("models/llama3-tiny"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);
  }
  std::vector<int32_t> Encode(const std::string& text) {
    return *tokenizer_->Encode(text, /*add_special_tokens=*/false);
  }
  // Streams `ids` through a checker; returns the streamed text and the last verdict.
  std::pair<std::string, StopVerdict> Stream(const SamplingParams& p,
                                             const std::vector<int32_t>& ids,
                                             std::vector<int32_t> eos = {}) {
    std::vector<int32_t> prompt = Encode("Licensed");
    SequenceSamplingState state = MakeSequenceState(prompt, 0);
    StopChecker checker(*tokenizer_, p, eos, prompt);
    std::string text;
    StopVerdict v;
    for (int32_t id : ids) {
      AppendToken(state, id);
      v = checker.Push(state, id);
      text += v.text;
      if (v.finish) break;
    }
    return {text, v};
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(StopCheckerTest, StopStringSpanningTokensEndsTheStreamWithoutIt) {
  SamplingParams p;
  p.stop = {"the License"};
  p.max_tokens = 100;
  std::vector<int32_t> ids = Encode(" under the License, Version 2.0");
  ASSERT_GT(ids.size(), 4u);
  auto [text, verdict] = Stream(p, ids);
  EXPECT_EQ(text, " under ");
  ASSERT_TRUE(verdict.finish.has_value());
  EXPECT_EQ(*verdict.finish, FinishReason::kStop);
  EXPECT_EQ(verdict.stop_string, "the License");
  p.include_stop_str_in_output = true;
  EXPECT_EQ(Stream(p, ids).first, " under the License");
}

TEST_F(StopCheckerTest, EosAndStopIdsFinishWithoutTheirText) {
  SamplingParams p;
  std::vector<int32_t> ids = Encode(" under the License");
  std::vector<int32_t> eos = {ids[1]};
  auto [text, verdict] = Stream(p, ids, eos);
  EXPECT_EQ(text, tokenizer_->Decode(std::span(ids).first(1), true));
  EXPECT_EQ(verdict.stop_token_id, ids[1]);
  EXPECT_EQ(*verdict.finish, FinishReason::kStop);
  p.ignore_eos = true;
  EXPECT_FALSE(Stream(p, ids, eos).second.finish.has_value());
  p.stop_token_ids = {ids[2]};
  EXPECT_EQ(Stream(p, ids, eos).second.stop_token_id, ids[2]);
}

TEST_F(StopCheckerTest, MaxTokensFinishesWithLengthAndReleasesHeldText) {
  SamplingParams p;
  p.stop = {" underneath"};  // " under" is a prefix: held back until the end
  std::vector<int32_t> ids = Encode(" under the");
  p.max_tokens = 1;
  auto [text, verdict] = Stream(p, ids);
  EXPECT_EQ(*verdict.finish, FinishReason::kLength);
  EXPECT_EQ(text, tokenizer_->Decode(std::span(ids).first(1), true));
}

TEST_F(StopCheckerTest, NoStopBeforeMinTokens) {
  SamplingParams p;
  p.stop = {"the"};
  p.min_tokens = 3;
  p.max_tokens = 10;
  std::vector<int32_t> ids = Encode(" the the the the");
  ASSERT_EQ(ids.size(), 4u);
  auto [text, verdict] = Stream(p, ids);
  EXPECT_EQ(verdict.stop_string, "the");
  EXPECT_EQ(text, " the the ");  // the third token is the first allowed to stop
}

TEST_F(StopCheckerTest, EngineEndedSequenceReleasesHeldText) {
  SamplingParams p;
  p.stop = {"Licensed under!"};
  p.max_tokens = 100;
  std::vector<int32_t> prompt = Encode("x");
  SequenceSamplingState state = MakeSequenceState(prompt, 0);
  StopChecker checker(*tokenizer_, p, {}, prompt);
  std::string text;
  for (int32_t id : Encode(" Licensed under")) {
    AppendToken(state, id);
    text += checker.Push(state, id).text;
  }
  EXPECT_EQ(text, " ");
  StopVerdict end = checker.EndForLength(state);
  EXPECT_EQ(text + end.text, " Licensed under");
  EXPECT_EQ(*end.finish, FinishReason::kLength);
}

}  // namespace
}  // namespace tandem
