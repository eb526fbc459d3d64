// Worker processes dying and stopping: a SIGKILLed decode worker makes the prefill's KV
// push fail with UNAVAILABLE (and the prefill worker frees its blocks); SIGTERM drains
// (draining reported, new work refused, running work finished) and exits 0.
#include <csignal>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/worker_pair.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> Prompt(const nlohmann::json& golden, size_t i) {
  return golden["prompts"][i]["ids"].get<std::vector<int32_t>>();
}

std::vector<int32_t> Reference(const nlohmann::json& golden, size_t i, size_t n) {
  auto greedy = golden["prompts"][i]["greedy"].get<std::vector<int32_t>>();
  return {greedy.begin(), greedy.begin() + n};
}

TEST(WorkerLifecycleTest, KilledDecodeWorkerFailsThePushWithUnavailable) {
  nlohmann::json golden = ReadJsonFixture("models/llama3-tiny/golden.json");
  auto pair = WorkerPair::Start("llama3-tiny");
  ASSERT_TRUE(pair.ok()) << pair.status();
  WorkerPair& p = **pair;
  // One request first, so the prefill worker holds a cached connection to the receiver.
  StreamResult warm = p.Generate("warm", Prompt(golden, 0), 4);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  std::vector<int32_t> prompt = Prompt(golden, 1);
  auto reservation = p.Reserve("doomed", static_cast<int32_t>(prompt.size()));
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  p.decode().process->Signal(SIGKILL);
  ASSERT_TRUE(p.decode().process->Wait(absl::Seconds(10)).ok());

  internal::v1::PrefillResponse response;
  grpc::Status status = p.Prefill(PrefillFor("doomed", prompt, 4, *reservation), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(reservation->kv_endpoint()));
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  absl::StatusOr<internal::v1::LoadReport> load;
  do {
    load = p.Load(/*decode=*/false);
    ASSERT_TRUE(load.ok()) << load.status();
  } while (load->num_blocks_free() != load->num_blocks_total() && absl::Now() < deadline &&
           (absl::SleepFor(absl::Milliseconds(50)), true));
  EXPECT_EQ(load->num_blocks_free(), load->num_blocks_total());
  EXPECT_TRUE(p.prefill().process->Running());
}

TEST(WorkerLifecycleTest, SigtermDrainsRunningWorkAndExitsZero) {
  nlohmann::json golden = ReadJsonFixture("models/llama3-tiny/golden.json");
  auto pair = WorkerPair::Start("llama3-tiny");
  ASSERT_TRUE(pair.ok()) << pair.status();
  WorkerPair& p = **pair;
  // A request in flight: reserved, its Decode stream parked until the KV arrives.
  std::vector<int32_t> prompt = Prompt(golden, 2);
  auto reservation = p.Reserve("inflight", static_cast<int32_t>(prompt.size()));
  ASSERT_TRUE(reservation.ok()) << reservation.status();
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(30));
  auto decode = GreedyDecodeRequest("inflight", prompt, 8);
  decode.set_reservation_id(reservation->reservation_id());
  auto reader = p.decode_stub().Decode(&context, decode);
  absl::SleepFor(absl::Milliseconds(200));  // let the call reach the worker

  p.decode().process->Signal(SIGTERM);
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  bool draining = false;
  while (!draining && absl::Now() < deadline) {
    auto load = p.Load(/*decode=*/true);
    draining = load.ok() && load->draining();
  }
  EXPECT_TRUE(draining);
  auto refused = p.Reserve("late", 4);
  EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("draining"));

  internal::v1::PrefillResponse prefilled;
  grpc::Status prefill = p.Prefill(PrefillFor("inflight", prompt, 8, *reservation), &prefilled);
  EXPECT_TRUE(prefill.ok()) << prefill.error_message();
  StreamResult result = ReadStream(context, *reader);
  EXPECT_TRUE(result.status.ok()) << result.status.error_message();
  EXPECT_EQ(result.tokens, Reference(golden, 2, 8));
  absl::StatusOr<int> code = p.decode().process->Wait(absl::Seconds(15));
  ASSERT_TRUE(code.ok()) << code.status() << p.decode().process->LogTail();
  EXPECT_EQ(*code, 0) << p.decode().process->LogTail();

  p.prefill().process->Signal(SIGTERM);
  code = p.prefill().process->Wait(absl::Seconds(15));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << p.prefill().process->LogTail();
}

}  // namespace
}  // namespace tandem::testing
