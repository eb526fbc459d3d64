// The router when things go wrong: client cancels and deadlines (mid-prefill, mid-decode),
// SIGKILL of a decode worker mid-stream (migration), SIGKILL of a prefill worker (retry),
// a worker restarted on the same port (new incarnation), and overload.
#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/router_cluster.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> GoldenIds(int i) {
  nlohmann::json golden = ReadJsonFixture("models/llama3-tiny/golden.json");
  return golden["prompts"][i]["ids"].get<std::vector<int32_t>>();
}

std::vector<int32_t> GoldenGreedy(int i) {
  nlohmann::json golden = ReadJsonFixture("models/llama3-tiny/golden.json");
  return golden["prompts"][i]["greedy"].get<std::vector<int32_t>>();
}

std::unique_ptr<RouterCluster> StartCluster(int num_prefill, int num_decode,
                                            std::vector<std::string> router_flags = {}) {
  RouterClusterOptions o;
  o.num_prefill = num_prefill;
  o.num_decode = num_decode;
  o.router_flags = std::move(router_flags);
  auto cluster = RouterCluster::Start(o);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return cluster.ok() ? *std::move(cluster) : nullptr;
}

// A seeded sampled request long enough to be interrupted.
v1::GenerateRequest SeededLongRequest(int32_t max_tokens) {
  v1::GenerateRequest r = GreedyRequest(GoldenIds(0), max_tokens);
  r.mutable_sampling()->set_temperature(0.9f);
  r.mutable_sampling()->set_top_k(50);
  r.mutable_sampling()->set_seed(1234);
  return r;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(RouterFailuresTest, ClientCancelMidDecodeFreesEveryBlock) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  grpc::ClientContext context;
  auto reader = cluster->stub().GenerateStream(&context, SeededLongRequest(900));
  v1::GenerateStreamResponse event;
  int tokens = 0;
  while (tokens < 5 && reader->Read(&event)) tokens += event.delta().token_ids_size();
  context.TryCancel();
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(RouterFailuresTest, CancelAndDeadlineDuringPrefillFreeEveryBlock) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  std::vector<int32_t> long_prompt;
  for (int i = 0; i < 1000; ++i) long_prompt.push_back(5 + i % 900);
  for (int delay_ms : {0, 2, 5, 10, 20}) {
    grpc::ClientContext cancelled;
    auto reader = cluster->stub().GenerateStream(&cancelled, GreedyRequest(long_prompt, 20));
    absl::SleepFor(absl::Milliseconds(delay_ms));
    cancelled.TryCancel();
    v1::GenerateStreamResponse event;
    while (reader->Read(&event)) {
    }
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.error_code() == grpc::StatusCode::CANCELLED || s.ok()) << s.error_message();

    grpc::ClientContext deadline;
    deadline.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(delay_ms + 1)));
    v1::GenerateResponse response;
    s = cluster->stub().Generate(&deadline, GreedyRequest(long_prompt, 20), &response);
    EXPECT_TRUE(s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED || s.ok())
        << s.error_message();
  }
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(RouterFailuresTest, DeadlineMidDecodeFreesEveryBlock) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  StreamOutput out = cluster->Stream(SeededLongRequest(1000 - 10), absl::Milliseconds(300));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << out.status.error_message() << " tokens=" << out.tokens.size();
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(RouterFailuresTest, DecodeWorkerKilledMidStreamMigratesWithIdenticalTokens) {
  auto cluster = StartCluster(1, 2);
  ASSERT_NE(cluster, nullptr);
  StreamOutput reference = cluster->Stream(SeededLongRequest(600));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
  ASSERT_EQ(reference.tokens.size(), 600u);
  std::string victim_name = reference.finished.served_by().decode_worker();

  bool killed = false;
  StreamOutput migrated = cluster->Stream(SeededLongRequest(600), absl::Seconds(40), [&](int n) {
    if (killed || n < 20) return;
    killed = true;
    for (int i = 0; i < 2; ++i) {  // kill whichever decode worker runs it
      auto& w = cluster->decode(i);
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      internal::v1::LoadReport report;
      auto stub = internal::v1::DecodeWorker::NewStub(
          grpc::CreateChannel(w.grpc_address, grpc::InsecureChannelCredentials()));
      if (stub->GetLoad(&context, internal::v1::GetLoadRequest(), &report).ok() &&
          report.num_running() > 0) {
        w.process->Signal(SIGKILL);
      }
    }
  });
  ASSERT_TRUE(killed);
  ASSERT_TRUE(migrated.status.ok()) << migrated.status.error_message();
  EXPECT_EQ(migrated.num_errors, 0);
  EXPECT_EQ(migrated.tokens, reference.tokens);  // no duplicate, none lost, same draw
  EXPECT_EQ(migrated.text, reference.text);
  EXPECT_EQ(migrated.num_finished, 1);
  EXPECT_GE(migrated.finished.served_by().migrations(), 1);
  EXPECT_EQ(migrated.finished.seed(), 1234u);
  EXPECT_EQ(migrated.finished.usage().completion_tokens(), 600);
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
  (void)victim_name;
}

TEST(RouterFailuresTest, PrefillWorkerKilledRequestsAreRetriedElsewhere) {
  auto cluster = StartCluster(2, 1, {"--prefill_policy=round_robin"});
  ASSERT_NE(cluster, nullptr);
  cluster->prefill(0).process->Signal(SIGKILL);
  ASSERT_TRUE(cluster->prefill(0).process->Wait(absl::Seconds(5)).ok());
  std::vector<int32_t> greedy = GoldenGreedy(1);
  for (int i = 0; i < 6; ++i) {
    StreamOutput out = cluster->Stream(GreedyRequest(GoldenIds(1), 16));
    ASSERT_TRUE(out.status.ok()) << i << ": " << out.status.error_message();
    EXPECT_EQ(out.tokens, std::vector<int32_t>(greedy.begin(), greedy.begin() + 16));
    EXPECT_EQ(out.finished.served_by().prefill_worker(), "prefill-1");
  }
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(RouterFailuresTest, WorkerRestartedOnSamePortIsANewIncarnation) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  uint64_t old_incarnation = cluster->decode(0).incarnation;
  ASSERT_TRUE(cluster->RestartDecode(0).ok());
  EXPECT_NE(cluster->decode(0).incarnation, old_incarnation);
  ASSERT_TRUE(cluster->WaitServing().ok());
  std::vector<int32_t> greedy = GoldenGreedy(0);
  StreamOutput out;
  for (int i = 0; i < 50; ++i) {  // the router reconnects within its backoff
    out = cluster->Stream(GreedyRequest(GoldenIds(0), 16));
    if (out.status.ok()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, std::vector<int32_t>(greedy.begin(), greedy.begin() + 16));
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  std::string log;
  while (absl::Now() < deadline) {
    log = ReadAll(cluster->router().log_path());
    if (log.find("event=worker_restarted worker=decode-0") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_THAT(log, HasSubstr("event=worker_restarted worker=decode-0"));
}

TEST(RouterFailuresTest, OverloadBeyondTheQueueIsRejectedQuicklyAndRecovers) {
  auto cluster = StartCluster(1, 1, {"--max_inflight=2", "--max_queue=2"});
  ASSERT_NE(cluster, nullptr);
  constexpr int kRequests = 12;
  std::vector<StreamOutput> outputs(kRequests);
  std::vector<absl::Duration> latency(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      absl::Time start = absl::Now();
      outputs[static_cast<size_t>(i)] = cluster->Stream(SeededLongRequest(300));
      latency[static_cast<size_t>(i)] = absl::Now() - start;
    });
  }
  for (std::thread& t : threads) t.join();
  int ok = 0, rejected = 0;
  for (int i = 0; i < kRequests; ++i) {
    const StreamOutput& out = outputs[static_cast<size_t>(i)];
    if (out.status.ok()) ++ok;
    if (out.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++rejected;
      EXPECT_LT(latency[static_cast<size_t>(i)], absl::Milliseconds(500));
      EXPECT_THAT(out.status.error_message(), HasSubstr("--max_queue"));
    }
  }
  EXPECT_EQ(ok + rejected, kRequests);
  EXPECT_GE(ok, 4);
  EXPECT_GE(rejected, 1);
  StreamOutput after = cluster->Stream(GreedyRequest(GoldenIds(0), 8));
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(RouterFailuresTest, SigtermDrainsInFlightAndExitsZero) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  StreamOutput out;
  std::thread client([&] { out = cluster->Stream(SeededLongRequest(300)); });
  absl::SleepFor(absl::Milliseconds(50));
  cluster->router().Signal(SIGTERM);
  client.join();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  absl::StatusOr<int> code = cluster->router().Wait(absl::Seconds(10));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(*code, 0);
}

}  // namespace
}  // namespace tandem::testing
