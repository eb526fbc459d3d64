// KvLayerProgress: what a sender waiting for a forward pass's K/V writes sees — layers in
// order with their events, completion, failure, and the deadline — across threads.
#include "common/kv_cache/kv_layer_progress.h"

#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

int event_storage[4];
void* Event(int layer) { return &event_storage[layer]; }

TEST(KvLayerProgressTest, LayersArePublishedInOrderWithTheirEvents) {
  KvLayerProgress progress(4);
  EXPECT_TRUE(absl::IsDeadlineExceeded(progress.WaitForLayers(1, absl::Now()).status()));
  absl::StatusOr<void*> none = progress.WaitForLayers(0, absl::Now());  // nothing needed
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
  progress.LayerWritten(0, Event(0));
  progress.LayerWritten(2, Event(2));  // out of order: ignored
  EXPECT_EQ(*progress.WaitForLayers(1, absl::Now()), Event(0));
  EXPECT_TRUE(absl::IsDeadlineExceeded(progress.WaitForLayers(2, absl::Now()).status()));
  progress.LayerWritten(1, Event(1));
  EXPECT_EQ(*progress.WaitForLayers(2, absl::Now()), Event(1));  // the last layer's event
  // More layers than the pass has clamp to all 4, not written yet.
  EXPECT_TRUE(absl::IsDeadlineExceeded(progress.WaitForLayers(99, absl::Now()).status()));
  // Complete: every layer is visible and nothing is left to wait on.
  progress.Complete();
  absl::StatusOr<void*> all = progress.WaitForLayers(4, absl::Now());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, nullptr);
  EXPECT_TRUE(progress.WaitForComplete(absl::Now()).ok());
  progress.Fail(absl::InternalError("late"));  // after Complete: ignored
  EXPECT_TRUE(progress.WaitForHostLayers(4, absl::Now()).ok());
}

TEST(KvLayerProgressTest, FailureReleasesWaitersForUnpublishedLayersOnly) {
  KvLayerProgress progress(3);
  progress.LayerWritten(0, nullptr);
  progress.Fail(absl::InternalError("pass failed at layer 1"));
  EXPECT_TRUE(progress.WaitForLayers(1, absl::Now()).ok());  // published before the failure
  absl::StatusOr<void*> second = progress.WaitForLayers(2, absl::Now() + absl::Seconds(5));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().message(), "pass failed at layer 1");
  EXPECT_EQ(progress.WaitForComplete(absl::Now() + absl::Seconds(5)).message(),
            "pass failed at layer 1");
}

TEST(KvLayerProgressTest, HostReadersOfDeviceWrittenLayersWaitForCompletion) {
  KvLayerProgress progress(2);
  progress.LayerWritten(0, Event(0));  // a device event: the host cannot see the bytes yet
  EXPECT_TRUE(absl::IsDeadlineExceeded(progress.WaitForHostLayers(1, absl::Now())));
  progress.Complete();
  EXPECT_TRUE(progress.WaitForHostLayers(1, absl::Now()).ok());
}

TEST(KvLayerProgressTest, AWaiterWakesWhenAnotherThreadPublishes) {
  KvLayerProgress progress(8);
  std::thread runner([&] {
    for (int layer = 0; layer < 8; ++layer) {
      absl::SleepFor(absl::Milliseconds(2));
      progress.LayerWritten(layer, nullptr);
    }
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<void*> all = progress.WaitForLayers(8, start + absl::Seconds(10));
  EXPECT_TRUE(all.ok()) << all.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));  // woken, not timed out
  runner.join();
}

}  // namespace
}  // namespace tandem
