// tandem-prefill + tandem-decode as real processes, with this test acting as the router:
// greedy output equals the transformers reference on the disaggregated and colocated
// paths, and cancels, expired reservations and hostile requests free every KV block.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/worker_pair.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;

class WorkersTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    golden_ = ReadJsonFixture("models/" + GetParam() + "/golden.json");
    auto pair = WorkerPair::Start(GetParam(), {"--num_kv_blocks=256"},
                                  {"--num_kv_blocks=192"});
    ASSERT_TRUE(pair.ok()) << pair.status();
    pair_ = *std::move(pair);
  }
  void TearDown() override {
    if (!pair_) return;
    EXPECT_TRUE(pair_->prefill().process->Running()) << pair_->prefill().process->LogTail();
    EXPECT_TRUE(pair_->decode().process->Running()) << pair_->decode().process->LogTail();
    absl::Status free = pair_->WaitAllBlocksFree();
    EXPECT_TRUE(free.ok()) << free;
  }

  std::vector<int32_t> Prompt(size_t i) const {
    return golden_["prompts"][i]["ids"].get<std::vector<int32_t>>();
  }
  std::vector<int32_t> Reference(size_t i, size_t n) const {
    auto greedy = golden_["prompts"][i]["greedy"].get<std::vector<int32_t>>();
    return {greedy.begin(), greedy.begin() + n};
  }
  size_t num_prompts() const { return golden_["prompts"].size(); }
  // A prompt of about `num_tokens` tokens (fixture prompts repeated).
  std::vector<int32_t> LongPrompt(size_t num_tokens) const {
    std::vector<int32_t> prompt;
    for (size_t i = 0; prompt.size() < num_tokens; ++i) {
      for (int32_t id : Prompt(i % num_prompts())) prompt.push_back(id);
    }
    prompt.resize(num_tokens);
    return prompt;
  }

  nlohmann::json golden_;
  std::unique_ptr<WorkerPair> pair_;
};

TEST_P(WorkersTest, DisaggregatedGreedyEqualsReferenceForConcurrentRequests) {
  constexpr int kRequests = 6;
  constexpr int kMaxTokens = 12;
  std::vector<StreamResult> results(kRequests);
  std::vector<std::thread> threads;
  for (int r = 0; r < kRequests; ++r) {
    threads.emplace_back([&, r] {
      results[r] = pair_->Generate("req-" + std::to_string(r), Prompt(r % num_prompts()),
                                   kMaxTokens);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kRequests; ++r) {
    EXPECT_TRUE(results[r].status.ok()) << r << ": " << results[r].status.error_message();
    EXPECT_EQ(results[r].tokens, Reference(r % num_prompts(), kMaxTokens)) << "request " << r;
    EXPECT_EQ(results[r].num_finished, 1) << "request " << r;
  }
}

TEST_P(WorkersTest, ColocatedGreedyEqualsReference) {
  for (size_t i = 0; i < 2; ++i) {
    StreamResult result = pair_->GenerateColocated("colo-" + std::to_string(i), Prompt(i), 16);
    EXPECT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.tokens, Reference(i, 16));
  }
}

TEST_P(WorkersTest, CancellingDecodeMidStreamFreesEverything) {
  std::vector<int32_t> prompt = Prompt(0);
  auto reservation = pair_->Reserve("cancel-decode", static_cast<int32_t>(prompt.size()));
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(30));
  auto decode = GreedyDecodeRequest("cancel-decode", prompt, 900);
  decode.set_reservation_id(reservation->reservation_id());
  auto reader = pair_->decode_stub().Decode(&context, decode);
  internal::v1::PrefillResponse prefilled;
  grpc::Status prefill =
      pair_->Prefill(PrefillFor("cancel-decode", prompt, 900, *reservation), &prefilled);
  ASSERT_TRUE(prefill.ok()) << prefill.error_message();
  EXPECT_EQ(prefilled.first_token_id(), Reference(0, 1)[0]);
  StreamResult result = ReadStream(context, *reader, /*cancel_after_tokens=*/3);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_GE(result.tokens.size(), 3u);
  EXPECT_LT(result.tokens.size(), 900u);
}

TEST_P(WorkersTest, CancellingMidPrefillFreesEverything) {
  // Long prompts in a prefill worker that computes 16 tokens per step: the cancels land
  // while the prompts are being computed or pushed.
  for (int r = 0; r < 3; ++r) {
    std::vector<int32_t> prompt = LongPrompt(300 + 50 * r);
    std::string id = "cancel-prefill-" + std::to_string(r);
    auto reservation = pair_->Reserve(id, static_cast<int32_t>(prompt.size()));
    ASSERT_TRUE(reservation.ok()) << reservation.status();
    grpc::ClientContext decode_context;
    auto decode = GreedyDecodeRequest(id, prompt, 8);
    decode.set_reservation_id(reservation->reservation_id());
    auto reader = pair_->decode_stub().Decode(&decode_context, decode);
    grpc::ClientContext prefill_context;
    internal::v1::PrefillResponse prefilled;
    grpc::Status prefill_status;
    std::thread prefill([&] {
      prefill_status = pair_->prefill_stub().Prefill(
          &prefill_context, PrefillFor(id, prompt, 8, *reservation), &prefilled);
    });
    absl::SleepFor(absl::Milliseconds(2 + 3 * r));
    prefill_context.TryCancel();  // the router cancels both calls
    decode_context.TryCancel();
    prefill.join();
    StreamResult result = ReadStream(decode_context, *reader);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_THAT(prefill_status.error_code(),
                ::testing::AnyOf(grpc::StatusCode::CANCELLED, grpc::StatusCode::OK));
    // A Decode call cancelled before it reached the worker never attached: the router also
    // aborts the reservation (otherwise it would be freed only at its lease).
    grpc::ClientContext abort_context;
    internal::v1::AbortRequest abort;
    abort.set_reservation_id(reservation->reservation_id());
    internal::v1::AbortResponse aborted;
    EXPECT_TRUE(pair_->decode_stub().Abort(&abort_context, abort, &aborted).ok());
  }
  absl::Status free = pair_->WaitAllBlocksFree();
  EXPECT_TRUE(free.ok()) << free;
}

TEST_P(WorkersTest, ExpiredReservationIsFreed) {
  auto reservation = pair_->Reserve("never-prefilled", 40, /*lease_ms=*/1500);
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  auto load = pair_->Load(/*decode=*/true);
  ASSERT_TRUE(load.ok());
  EXPECT_EQ(load->num_reserved_blocks(), 3);
  absl::Status free = pair_->WaitAllBlocksFree(absl::Seconds(5));  // lease, not lease + grace
  EXPECT_TRUE(free.ok()) << free;
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(5));
  auto decode = GreedyDecodeRequest("never-prefilled", LongPrompt(40), 4);
  decode.set_reservation_id(reservation->reservation_id());
  auto reader = pair_->decode_stub().Decode(&context, decode);
  StreamResult result = ReadStream(context, *reader);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(result.status.error_message(), HasSubstr("reservation_id"));
}

TEST_P(WorkersTest, ParkedDecodeStreamFailsWhenTheLeaseExpires) {
  auto reservation = pair_->Reserve("parked", 10, /*lease_ms=*/300);
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  auto decode = GreedyDecodeRequest("parked", LongPrompt(10), 4);
  decode.set_reservation_id(reservation->reservation_id());
  auto reader = pair_->decode_stub().Decode(&context, decode);
  StreamResult result = ReadStream(context, *reader);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(result.status.error_message(), HasSubstr("lease"));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, WorkersTest, ::testing::Values("llama3-tiny", "llama2-tiny"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace tandem::testing
