// Migration bookkeeping: what the client sees across a re-issued request.
#include "router/output_tracker.h"

#include "gtest/gtest.h"

namespace tandem::router {
namespace {

v1::Delta MakeDelta(int32_t index, std::vector<int32_t> ids, std::string text) {
  v1::Delta d;
  d.set_index(index);
  for (int32_t id : ids) {
    d.add_token_ids(id);
    d.add_logprobs()->set_token_id(id);
  }
  d.set_text(std::move(text));
  return d;
}

TEST(OutputTrackerTest, ContinueModeRelaysEverythingTheNewPairSends) {
  OutputTracker t(1);
  t.BeginAttempt(false);
  v1::Delta a = MakeDelta(0, {1, 2}, "ab");
  ASSERT_TRUE(t.Accept(a));
  EXPECT_EQ(t.tokens(0), (std::vector<int32_t>{1, 2}));
  // D dies; the new pair gets generated_token_ids = {1, 2} and sends only what follows.
  t.BeginAttempt(false);
  v1::Delta b = MakeDelta(0, {3}, "c");
  ASSERT_TRUE(t.Accept(b));
  EXPECT_EQ(b.token_ids_size(), 1);
  EXPECT_EQ(t.tokens(0), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_TRUE(t.AcceptFinished(0));
  EXPECT_TRUE(t.AllFinished());
}

TEST(OutputTrackerTest, ReplayTrimsWhatTheClientAlreadyHas) {
  OutputTracker t(2);
  t.BeginAttempt(true);
  v1::Delta a0 = MakeDelta(0, {1, 2, 3}, "abc");
  v1::Delta a1 = MakeDelta(1, {7}, "x");
  ASSERT_TRUE(t.Accept(a0));
  ASSERT_TRUE(t.Accept(a1));
  // Replay from scratch with different delta boundaries.
  t.BeginAttempt(true);
  v1::Delta r0 = MakeDelta(0, {1, 2}, "ab");
  EXPECT_FALSE(t.Accept(r0));  // all seen
  v1::Delta r1 = MakeDelta(0, {3, 4}, "cd");
  ASSERT_TRUE(t.Accept(r1));
  EXPECT_EQ(std::vector<int32_t>(r1.token_ids().begin(), r1.token_ids().end()),
            std::vector<int32_t>{4});
  EXPECT_EQ(r1.logprobs_size(), 1);
  EXPECT_EQ(r1.logprobs(0).token_id(), 4);
  EXPECT_EQ(r1.text(), "d");
  v1::Delta r2 = MakeDelta(1, {7, 8}, "xy");
  ASSERT_TRUE(t.Accept(r2));
  EXPECT_EQ(r2.text(), "y");
  EXPECT_EQ(t.tokens(0), (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(t.tokens(1), (std::vector<int32_t>{7, 8}));
  EXPECT_EQ(t.total_tokens(), 6);
}

TEST(OutputTrackerTest, FinishedOutputsAreNotRelayedTwice) {
  OutputTracker t(2);
  t.BeginAttempt(true);
  v1::Delta a = MakeDelta(0, {1}, "a");
  ASSERT_TRUE(t.Accept(a));
  ASSERT_TRUE(t.AcceptFinished(0));
  t.BeginAttempt(true);
  v1::Delta again = MakeDelta(0, {1}, "a");
  EXPECT_FALSE(t.Accept(again));
  EXPECT_FALSE(t.AcceptFinished(0));
  EXPECT_FALSE(t.AllFinished());
  EXPECT_TRUE(t.AcceptFinished(1));
  EXPECT_TRUE(t.AllFinished());
}

TEST(OutputTrackerTest, UnknownIndexIsDropped) {
  OutputTracker t(1);
  v1::Delta d = MakeDelta(3, {1}, "a");
  EXPECT_FALSE(t.Accept(d));
  EXPECT_FALSE(t.AcceptFinished(-1));
  EXPECT_FALSE(t.AnyRelayed());
}

TEST(OutputTrackerTest, TextWithoutTokensStillCounts) {
  OutputTracker t(1);
  v1::Delta held = MakeDelta(0, {5, 6}, "");  // text held back (partial UTF-8 / stop match)
  ASSERT_TRUE(t.Accept(held));
  v1::Delta flush = MakeDelta(0, {}, "é");
  ASSERT_TRUE(t.Accept(flush));
  t.BeginAttempt(true);
  v1::Delta replay = MakeDelta(0, {5, 6, 7}, "éz");
  ASSERT_TRUE(t.Accept(replay));
  EXPECT_EQ(replay.text(), "z");
  EXPECT_EQ(replay.token_ids_size(), 1);
}

}  // namespace
}  // namespace tandem::router
