// The decode worker's reservation table: a request starts when both its Decode call and its
// KV are present, in either order; failures hand back the parked call; nothing lingers.
#include "decode_worker/reservation_table.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

struct NullSink final : OutputSink {
  void OnOutput(EngineOutput) override {}
};

EngineRequest Request(const std::string& id, int num_tokens, int32_t n = 1) {
  EngineRequest r{.request_id = id, .prompt_ids = std::vector<int32_t>(num_tokens, 3),
                  .sink = std::make_shared<NullSink>()};
  r.params.n = n;
  return r;
}

ReservationInfo Info(int num_tokens, absl::Time lease = absl::Now() + absl::Seconds(30)) {
  return {.request_id = "req", .num_tokens = num_tokens, .num_blocks = 1, .lease_deadline = lease};
}

KvArrival Arrived(const std::string& id, absl::Status status = absl::OkStatus()) {
  return {.reservation_id = id, .status = std::move(status), .num_tokens = 5, .first_token_id = 9};
}

TEST(ReservationTableTest, CallThenKvStartsOnArrival) {
  ReservationTable table;
  table.AddReservation("r1", Info(5));
  EXPECT_EQ(table.num_reserved_blocks(), 1);
  auto attached = table.AttachCall("r1", Request("r1", 5));
  ASSERT_TRUE(attached.ok()) << attached.status();
  EXPECT_FALSE(attached->has_value());  // parked
  auto outcome = table.OnArrival(Arrived("r1"));
  ASSERT_TRUE(outcome.ready.has_value());
  EXPECT_EQ(outcome.ready->arrival.first_token_id, 9);
  EXPECT_EQ(table.num_reserved_blocks(), 0);  // decoding now
  EXPECT_EQ(table.size(), 1u);                 // until the stream ends
  table.Remove("r1");
  EXPECT_EQ(table.size(), 0u);
}

TEST(ReservationTableTest, KvThenCallStartsOnAttach) {
  ReservationTable table;
  table.AddReservation("r1", Info(5));
  auto outcome = table.OnArrival(Arrived("r1"));
  EXPECT_FALSE(outcome.ready.has_value());
  EXPECT_FALSE(outcome.failed);
  auto attached = table.AttachCall("r1", Request("r1", 5));
  ASSERT_TRUE(attached.ok());
  ASSERT_TRUE(attached->has_value());
  // A second call on the same reservation is refused.
  EXPECT_TRUE(absl::IsAlreadyExists(table.AttachCall("r1", Request("r1", 5)).status()));
}

TEST(ReservationTableTest, AttachChecksTheReservation) {
  ReservationTable table;
  EXPECT_TRUE(absl::IsNotFound(table.AttachCall("nope", Request("nope", 5)).status()));
  table.AddReservation("r1", Info(5));
  auto mismatch = table.AttachCall("r1", Request("r1", 7));
  EXPECT_TRUE(absl::IsFailedPrecondition(mismatch.status()));
  EXPECT_THAT(std::string(mismatch.status().message()), ::testing::HasSubstr("holds KV for 5"));
  // n > 1: the prefill worker sends all but the last token.
  EXPECT_TRUE(table.AttachCall("r1", Request("r1", 6, /*n=*/2)).ok());
}

TEST(ReservationTableTest, FailedArrivalHandsBackTheParkedCall) {
  ReservationTable table;
  table.AddReservation("r1", Info(5));
  ASSERT_TRUE(table.AttachCall("r1", Request("r1", 5)).ok());
  auto outcome = table.OnArrival(Arrived("r1", absl::DeadlineExceededError("lease")));
  EXPECT_TRUE(outcome.failed);
  EXPECT_NE(outcome.failed_sink, nullptr);
  EXPECT_EQ(table.size(), 0u);
  // A late arrival for a forgotten reservation is dropped.
  auto late = table.OnArrival(Arrived("r1"));
  EXPECT_FALSE(late.failed);
  EXPECT_FALSE(late.ready.has_value());
}

TEST(ReservationTableTest, TakeUnstartedAndAbortByRequestId) {
  ReservationTable table;
  table.AddReservation("r1", Info(5));
  table.AddReservation("r2", Info(5));
  ASSERT_TRUE(table.AddColocated("other").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(table.AddColocated("other")));
  EXPECT_THAT(table.IdsOf("req"), ::testing::UnorderedElementsAre("r1", "r2"));
  EXPECT_EQ(table.TakeUnstarted("r1"), nullptr);  // no call was parked
  EXPECT_EQ(table.TakeUnstarted("other"), nullptr);  // running: its stream ends it
  EXPECT_EQ(table.size(), 2u);
}

TEST(ReservationTableTest, AbandonedReservationsAreSwept) {
  ReservationTable table;
  absl::Time lease = absl::Now();
  table.AddReservation("r1", Info(5, lease));
  table.OnArrival(Arrived("r1"));  // KV came, the call never did
  EXPECT_TRUE(table.SweepAbandoned(lease + absl::Seconds(1), absl::Seconds(10)).empty());
  EXPECT_THAT(table.SweepAbandoned(lease + absl::Seconds(11), absl::Seconds(10)),
              ::testing::ElementsAre("r1"));
  EXPECT_EQ(table.size(), 0u);
}

}  // namespace
}  // namespace tandem
