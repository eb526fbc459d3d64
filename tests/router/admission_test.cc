#include "router/admission.h"

#include <vector>

#include "gtest/gtest.h"

namespace tandem::router {
namespace {

TEST(AdmissionTest, RunsUpToMaxInflightThenQueuesThenRejects) {
  Admission admission(/*max_inflight=*/2, /*max_queue=*/1);
  std::vector<int> started;
  EXPECT_EQ(admission.Enter(1, [] {}), Admission::Decision::kRunNow);
  EXPECT_EQ(admission.Enter(2, [] {}), Admission::Decision::kRunNow);
  EXPECT_EQ(admission.Enter(3, [&] { started.push_back(3); }), Admission::Decision::kQueued);
  EXPECT_EQ(admission.Enter(4, [] {}), Admission::Decision::kRejected);
  EXPECT_EQ(admission.num_running(), 2);
  EXPECT_EQ(admission.num_queued(), 1);
  admission.Release();  // request 1 done: 3 takes its slot
  EXPECT_EQ(started, std::vector<int>{3});
  EXPECT_EQ(admission.num_running(), 2);
  EXPECT_EQ(admission.num_queued(), 0);
  admission.Release();
  admission.Release();
  EXPECT_EQ(admission.num_running(), 0);
}

TEST(AdmissionTest, QueueIsFirstComeFirstServed) {
  Admission admission(1, 3);
  std::vector<int> started;
  ASSERT_EQ(admission.Enter(1, [] {}), Admission::Decision::kRunNow);
  for (int id = 2; id <= 4; ++id) {
    ASSERT_EQ(admission.Enter(id, [&, id] { started.push_back(id); }),
              Admission::Decision::kQueued);
  }
  admission.Release();
  admission.Release();
  admission.Release();
  EXPECT_EQ(started, (std::vector<int>{2, 3, 4}));
}

TEST(AdmissionTest, WithdrawnEntriesNeverStartAndFreeTheirQueueSlot) {
  Admission admission(1, 1);
  bool started = false;
  ASSERT_EQ(admission.Enter(1, [] {}), Admission::Decision::kRunNow);
  ASSERT_EQ(admission.Enter(2, [&] { started = true; }), Admission::Decision::kQueued);
  EXPECT_TRUE(admission.Withdraw(2));
  EXPECT_FALSE(admission.Withdraw(2));  // idempotent
  EXPECT_EQ(admission.Enter(3, [] {}), Admission::Decision::kQueued);
  admission.Release();  // 3 starts, not 2
  EXPECT_FALSE(started);
  EXPECT_FALSE(admission.Withdraw(3));  // already running
}

TEST(AdmissionTest, ZeroQueueRejectsAtOnceWhenFull) {
  Admission admission(1, 0);
  ASSERT_EQ(admission.Enter(1, [] {}), Admission::Decision::kRunNow);
  EXPECT_EQ(admission.Enter(2, [] {}), Admission::Decision::kRejected);
}

TEST(AdmissionTest, ClosedRejectsNewButQueuedStillRun) {
  Admission admission(1, 2);
  bool started = false;
  ASSERT_EQ(admission.Enter(1, [] {}), Admission::Decision::kRunNow);
  ASSERT_EQ(admission.Enter(2, [&] { started = true; }), Admission::Decision::kQueued);
  admission.Close();
  EXPECT_EQ(admission.Enter(3, [] {}), Admission::Decision::kClosed);
  admission.Release();
  EXPECT_TRUE(started);
}

}  // namespace
}  // namespace tandem::router
