// Hostile and malformed requests to real worker processes: each gets the right status code
// with a message naming the field, nothing crashes, and no KV block leaks.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/worker_pair.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;
using internal::v1::DecodeRequest;
using internal::v1::PrefillRequest;
using internal::v1::ReserveRequest;

class WorkerRequestsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto pair = WorkerPair::Start("llama3-tiny", {"--num_kv_blocks=128"}, {"--num_kv_blocks=128"});
    ASSERT_TRUE(pair.ok()) << pair.status();
    pair_ = pair->release();
  }
  static void TearDownTestSuite() {
    delete pair_;
    pair_ = nullptr;
  }
  void TearDown() override {
    ASSERT_NE(pair_, nullptr);
    EXPECT_TRUE(pair_->prefill().process->Running()) << pair_->prefill().process->LogTail();
    EXPECT_TRUE(pair_->decode().process->Running()) << pair_->decode().process->LogTail();
    absl::Status free = pair_->WaitAllBlocksFree();
    EXPECT_TRUE(free.ok()) << free;
  }

  static grpc::Status Reserve(const ReserveRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context, absl::Seconds(5));
    internal::v1::ReserveResponse response;
    return pair_->decode_stub().Reserve(&context, request, &response);
  }
  static StreamResult Decode(const DecodeRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context, absl::Seconds(10));
    auto reader = pair_->decode_stub().Decode(&context, request);
    return ReadStream(context, *reader, /*cancel_after_tokens=*/4);
  }
  static grpc::Status Prefill(const PrefillRequest& request) {
    internal::v1::PrefillResponse response;
    return pair_->Prefill(request, &response, absl::Seconds(10));
  }
  // A reservation as the decode worker would give it, for prefill-side checks.
  static internal::v1::Reservation FakeReservation(int num_blocks) {
    internal::v1::Reservation r;
    r.set_reservation_id("fake#r1");
    for (int i = 0; i < num_blocks; ++i) r.add_block_ids(i);
    r.set_block_size_tokens(16);
    r.set_kv_endpoint(pair_->decode().kv_address);
    r.mutable_decode_worker()->set_incarnation(pair_->decode().incarnation);
    return r;
  }

  static WorkerPair* pair_;
};

WorkerPair* WorkerRequestsTest::pair_ = nullptr;

void ExpectStatus(const grpc::Status& status, grpc::StatusCode code, const std::string& field) {
  EXPECT_EQ(status.error_code(), code) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(field));
}

TEST_F(WorkerRequestsTest, BadReserveRequests) {
  ReserveRequest r;
  r.set_request_id("x");
  r.set_num_prompt_tokens(0);
  ExpectStatus(Reserve(r), grpc::StatusCode::INVALID_ARGUMENT, "num_prompt_tokens");
  r.set_num_prompt_tokens(1 << 30);
  ExpectStatus(Reserve(r), grpc::StatusCode::INVALID_ARGUMENT, "num_prompt_tokens");
  r.set_num_prompt_tokens(10);
  r.set_lease_ms(-1);
  ExpectStatus(Reserve(r), grpc::StatusCode::INVALID_ARGUMENT, "lease_ms");
  r.set_lease_ms(0);
  r.set_max_tokens(-5);
  ExpectStatus(Reserve(r), grpc::StatusCode::INVALID_ARGUMENT, "max_tokens");
  r.set_max_tokens(5);
  r.clear_request_id();
  ExpectStatus(Reserve(r), grpc::StatusCode::INVALID_ARGUMENT, "request_id");
}

TEST_F(WorkerRequestsTest, ReserveBeyondThePoolIsResourceExhaustedAndAbortFreesIt) {
  // 128 blocks of 16 tokens: two reservations of 1000 tokens (63 blocks each) fit, a third
  // does not.
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    auto reservation = pair_->Reserve("big", 1000);
    ASSERT_TRUE(reservation.ok()) << reservation.status();
    ids.push_back(reservation->reservation_id());
  }
  auto third = pair_->Reserve("big", 1000);
  EXPECT_TRUE(absl::IsResourceExhausted(third.status())) << third.status();
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(5));
  internal::v1::AbortRequest abort;
  abort.set_request_id("big");  // every reservation of the request
  internal::v1::AbortResponse aborted;
  EXPECT_TRUE(pair_->decode_stub().Abort(&context, abort, &aborted).ok());
}

TEST_F(WorkerRequestsTest, BadDecodeRequests) {
  DecodeRequest r = GreedyDecodeRequest("bad", {0, 5, 7}, 4);
  r.set_reservation_id("no-such-reservation");
  ExpectStatus(Decode(r).status, grpc::StatusCode::NOT_FOUND, "reservation_id");
  r.clear_reservation_id();
  r.set_prompt_token_ids(1, 5000);
  ExpectStatus(Decode(r).status, grpc::StatusCode::INVALID_ARGUMENT, "prompt_token_ids[1]");
  r.clear_prompt_token_ids();
  ExpectStatus(Decode(r).status, grpc::StatusCode::INVALID_ARGUMENT, "prompt_token_ids");
  r.add_prompt_token_ids(3);
  r.add_generated_token_ids(-1);
  ExpectStatus(Decode(r).status, grpc::StatusCode::INVALID_ARGUMENT, "generated_token_ids[0]");
  r.clear_generated_token_ids();
  r.mutable_sampling()->set_top_p(1.5f);
  ExpectStatus(Decode(r).status, grpc::StatusCode::INVALID_ARGUMENT, "top_p");
  r.mutable_sampling()->set_top_p(1.0f);
  r.mutable_sampling()->set_max_tokens(0);
  ExpectStatus(Decode(r).status, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens");
  r.clear_request_id();
  r.mutable_sampling()->set_max_tokens(4);
  ExpectStatus(Decode(r).status, grpc::StatusCode::INVALID_ARGUMENT, "request_id");
}

TEST_F(WorkerRequestsTest, HugeMaxTokensRunsToTheContextAndCanBeCancelled) {
  DecodeRequest r = GreedyDecodeRequest("huge", {0, 5, 7}, 2'000'000'000);
  StreamResult result = Decode(r);  // cancelled after 4 tokens
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_GE(result.tokens.size(), 4u);
}

TEST_F(WorkerRequestsTest, MismatchedReservationIsFailedPrecondition) {
  auto reservation = pair_->Reserve("mismatch", 20);
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  DecodeRequest r = GreedyDecodeRequest("mismatch", {0, 5, 7}, 4);  // 3 tokens, not 20
  r.set_reservation_id(reservation->reservation_id());
  ExpectStatus(Decode(r).status, grpc::StatusCode::FAILED_PRECONDITION, "holds KV for 20");
  grpc::ClientContext context;
  internal::v1::AbortRequest abort;
  abort.set_reservation_id(reservation->reservation_id());
  internal::v1::AbortResponse aborted;
  EXPECT_TRUE(pair_->decode_stub().Abort(&context, abort, &aborted).ok());
}

TEST_F(WorkerRequestsTest, BadPrefillRequests) {
  PrefillRequest r = PrefillFor("bad", {0, 5, 7}, 4, FakeReservation(1));
  r.clear_token_ids();
  ExpectStatus(Prefill(r), grpc::StatusCode::INVALID_ARGUMENT, "token_ids");
  r.add_token_ids(0);
  r.add_token_ids(99999);
  ExpectStatus(Prefill(r), grpc::StatusCode::INVALID_ARGUMENT, "token_ids[1]");
  r.set_token_ids(1, 5);
  r.set_num_generated(2);
  ExpectStatus(Prefill(r), grpc::StatusCode::INVALID_ARGUMENT, "num_generated");
  r.set_num_generated(0);
  r.clear_reservation();
  ExpectStatus(Prefill(r), grpc::StatusCode::INVALID_ARGUMENT, "reservation.reservation_id");
  *r.mutable_reservation() = FakeReservation(0);
  ExpectStatus(Prefill(r), grpc::StatusCode::FAILED_PRECONDITION, "reservation.block_ids");
  *r.mutable_reservation() = FakeReservation(1);
  r.mutable_reservation()->set_kv_endpoint("nowhere");
  ExpectStatus(Prefill(r), grpc::StatusCode::INVALID_ARGUMENT, "reservation.kv_endpoint");
  *r.mutable_reservation() = FakeReservation(1);
  r.mutable_sampling()->set_temperature(-1.0f);
  ExpectStatus(Prefill(r), grpc::StatusCode::INVALID_ARGUMENT, "temperature");
}

TEST_F(WorkerRequestsTest, PrefillIntoARestartedReceiverIsRefused) {
  auto reservation = pair_->Reserve("stale", 3);
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  internal::v1::Reservation stale = *reservation;
  stale.mutable_decode_worker()->set_incarnation(reservation->decode_worker().incarnation() + 1);
  ExpectStatus(Prefill(PrefillFor("stale", {0, 5, 7}, 4, stale)),
               grpc::StatusCode::FAILED_PRECONDITION, "incarnation");
  grpc::ClientContext context;
  internal::v1::AbortRequest abort;
  abort.set_request_id("stale");
  internal::v1::AbortResponse aborted;
  EXPECT_TRUE(pair_->decode_stub().Abort(&context, abort, &aborted).ok());
}

}  // namespace
}  // namespace tandem::testing
