#include "router/retry_policy.h"

#include "gtest/gtest.h"
#include "router/router_options.h"

namespace tandem::router {
namespace {

TEST(BackoffTest, GrowsExponentiallyWithinJitterBoundsAndCaps) {
  RetryOptions o;  // 50 ms initial, x2, 1 s cap
  EXPECT_EQ(BackoffDelay(o, 1, 0.0), absl::Milliseconds(25));
  EXPECT_EQ(BackoffDelay(o, 1, 1.0), absl::Milliseconds(50));
  EXPECT_EQ(BackoffDelay(o, 2, 1.0), absl::Milliseconds(100));
  EXPECT_EQ(BackoffDelay(o, 3, 0.5), absl::Milliseconds(150));
  EXPECT_EQ(BackoffDelay(o, 10, 1.0), absl::Seconds(1));
  EXPECT_EQ(BackoffDelay(o, 1000, 0.0), absl::Milliseconds(500));
}

TEST(BackoffTest, JitterSpreadsDelays) {
  RetryOptions o;
  absl::Duration lo = BackoffDelay(o, 4, 0.01), hi = BackoffDelay(o, 4, 0.99);
  EXPECT_LT(lo, hi);
  EXPECT_GE(lo, absl::Milliseconds(200));
  EXPECT_LE(hi, absl::Milliseconds(400));
}

TEST(ClassifyTest, WorkerDeathIsRetriedCapacityIsNotAFailure) {
  EXPECT_EQ(ClassifyWorkerFailure(grpc::StatusCode::UNAVAILABLE), FailureKind::kRetry);
  EXPECT_EQ(ClassifyWorkerFailure(grpc::StatusCode::CANCELLED), FailureKind::kRetry);
  EXPECT_EQ(ClassifyWorkerFailure(grpc::StatusCode::INTERNAL), FailureKind::kRetry);
  EXPECT_EQ(ClassifyWorkerFailure(grpc::StatusCode::RESOURCE_EXHAUSTED), FailureKind::kNoCapacity);
  EXPECT_EQ(ClassifyWorkerFailure(grpc::StatusCode::DEADLINE_EXCEEDED), FailureKind::kDeadline);
  EXPECT_EQ(ClassifyWorkerFailure(grpc::StatusCode::INVALID_ARGUMENT), FailureKind::kFatal);
}

TEST(ClassifyTest, ClientNeverSeesUnknown) {
  EXPECT_EQ(ClientCodeFor(grpc::StatusCode::UNKNOWN), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ClientCodeFor(grpc::StatusCode::INTERNAL), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ClientCodeFor(grpc::StatusCode::INVALID_ARGUMENT), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ClientCodeFor(grpc::StatusCode::OK), grpc::StatusCode::INTERNAL);
}

TEST(RetryOptionsTest, Validation) {
  RetryOptions o;
  EXPECT_TRUE(ValidateRetryOptions(o).ok());
  o.multiplier = 0.5;
  EXPECT_FALSE(ValidateRetryOptions(o).ok());
  o = RetryOptions{};
  o.max_backoff = absl::Milliseconds(1);
  EXPECT_FALSE(ValidateRetryOptions(o).ok());
}

struct FlagRow {
  const char* name;
  void (*mutate)(RouterOptions&);
  const char* flag;
};

TEST(RouterOptionsTest, EachBadFlagIsNamed) {
  const FlagRow rows[] = {
      {"no_model", [](RouterOptions& o) { o.model_dir.clear(); }, "--model"},
      {"listen_no_port", [](RouterOptions& o) { o.listen = "localhost"; }, "--listen"},
      {"listen_bad_port", [](RouterOptions& o) { o.listen = "127.0.0.1:99999"; }, "--listen"},
      {"decode_port_zero", [](RouterOptions& o) { o.decode_addresses = {"127.0.0.1:0"}; }, "--decode"},
      {"prefill_garbage", [](RouterOptions& o) { o.prefill_addresses = {"x:y"}; }, "--prefill"},
      {"max_inflight", [](RouterOptions& o) { o.max_inflight = 0; }, "--max_inflight"},
      {"max_queue", [](RouterOptions& o) { o.max_queue = -1; }, "--max_queue"},
      {"max_attempts", [](RouterOptions& o) { o.retry.max_attempts = 0; }, "--max_attempts"},
      {"max_attempts_big", [](RouterOptions& o) { o.retry.max_attempts = 1000; }, "--max_attempts"},
      {"timeout", [](RouterOptions& o) { o.request_timeout = absl::ZeroDuration(); }, "--request_timeout"},
      {"drain", [](RouterOptions& o) { o.drain_timeout = -absl::Seconds(1); }, "--drain_timeout"},
      {"block", [](RouterOptions& o) { o.kv_block_size_tokens = 8; }, "--kv_block_size_tokens"},
  };
  for (const FlagRow& row : rows) {
    RouterOptions o;
    o.model_dir = "/m";
    ASSERT_TRUE(ValidateRouterOptions(o).ok());
    row.mutate(o);
    absl::Status s = ValidateRouterOptions(o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << row.name;
    EXPECT_NE(std::string(s.message()).find(row.flag), std::string::npos) << row.name << ": " << s;
  }
}

TEST(RouterOptionsTest, AddressLists) {
  auto list = ParseAddressList("--decode", "127.0.0.1:5001,localhost:5002");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
  EXPECT_TRUE(ParseAddressList("--decode", "")->empty());
  EXPECT_FALSE(ParseAddressList("--decode", "127.0.0.1:5001,").ok());
  EXPECT_TRUE(ValidateAddress("--listen", "127.0.0.1:0", 0).ok());
}

}  // namespace
}  // namespace tandem::router
