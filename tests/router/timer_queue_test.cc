#include "router/timer_queue.h"

#include <atomic>
#include <mutex>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace tandem::router {
namespace {

TEST(TimerQueueTest, RunsInTimeOrderAndCancelDrops) {
  TimerQueue timers;
  std::mutex mu;
  std::vector<int> order;
  absl::Notification done;
  absl::Time now = absl::Now();
  timers.Schedule(now + absl::Milliseconds(30), [&] {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(2);
    done.Notify();
  });
  timers.Schedule(now + absl::Milliseconds(10), [&] {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(1);
  });
  uint64_t dropped = timers.Schedule(now + absl::Milliseconds(20), [&] {
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(99);
  });
  EXPECT_TRUE(timers.Cancel(dropped));
  EXPECT_FALSE(timers.Cancel(dropped));
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
}

TEST(TimerQueueTest, PendingCallbacksAreDroppedOnDestruction) {
  std::atomic<bool> ran{false};
  {
    TimerQueue timers;
    timers.Schedule(absl::Now() + absl::Hours(1), [&] { ran = true; });
  }
  EXPECT_FALSE(ran.load());
}

}  // namespace
}  // namespace tandem::router
