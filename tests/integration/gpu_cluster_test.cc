// The disaggregated cluster on two GPUs (label multi_gpu): tandem-prefill on GPU 0 and
// tandem-decode on GPU 1 with --backend=cuda, KV moved GPU to GPU by the NCCL transport, in
// front of a real tandem-router; compared with the colocated configuration (one decode
// worker running whole requests on a GPU). Checks greedy equality, killed decode and prefill
// processes (migration, restart, the communicator rebuilt, the next requests served) and that
// no KV block stays held on either side. Skipped with fewer than two CUDA devices.
#include <cuda_runtime.h>

#include <algorithm>
#include <csignal>
#include <iostream>
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

int CudaDevices() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

#define REQUIRE_TWO_GPUS()                                                  \
  do {                                                                      \
    if (CudaDevices() < 2) GTEST_SKIP() << "needs two CUDA devices";        \
  } while (0)

nlohmann::json Golden() { return ReadJsonFixture("models/llama3-tiny/golden.json"); }

std::vector<int32_t> GoldenIds(int i) {
  return Golden()["prompts"][i]["ids"].get<std::vector<int32_t>>();
}

// A prompt of many KV blocks (tokens of the golden prompts repeated), so a transfer has
// several blocks per layer.
std::vector<int32_t> LongPrompt(size_t tokens) {
  std::vector<int32_t> all;
  for (int i = 0; all.size() < tokens; i = (i + 1) % 6) {
    std::vector<int32_t> ids = GoldenIds(i);
    all.insert(all.end(), ids.begin(), ids.end());
  }
  all.resize(tokens);
  return all;
}

const std::vector<std::string> kCudaFlags = {"--backend=cuda", "--num_kv_blocks=1024",
                                             "--max_num_batched_tokens=2048"};

// 1 prefill worker on GPU 0, `num_decode` decode workers on GPU 1, KV over NCCL.
std::unique_ptr<RouterCluster> StartDisaggregated(int num_decode,
                                                  std::vector<std::string> router_flags = {}) {
  RouterClusterOptions o;
  o.num_prefill = 1;
  o.num_decode = num_decode;
  o.worker_flags = kCudaFlags;
  o.worker_flags.push_back("--kv_transport=nccl");
  o.prefill_flags = {"--device=0"};
  o.decode_flags = {"--device=1"};
  o.router_flags = std::move(router_flags);
  auto cluster = RouterCluster::Start(o);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return cluster.ok() ? *std::move(cluster) : nullptr;
}

// One decode worker on GPU 0 running whole requests (no prefill worker, no transfer).
std::unique_ptr<RouterCluster> StartColocated() {
  RouterClusterOptions o;
  o.num_prefill = 0;
  o.num_decode = 1;
  o.worker_flags = kCudaFlags;
  o.decode_flags = {"--device=0"};
  auto cluster = RouterCluster::Start(o);
  EXPECT_TRUE(cluster.ok()) << cluster.status();
  return cluster.ok() ? *std::move(cluster) : nullptr;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The prompts every test sends: the six golden prompts and two long ones.
std::vector<std::vector<int32_t>> Prompts() {
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back(GoldenIds(i));
  prompts.push_back(LongPrompt(600));
  prompts.push_back(LongPrompt(900));
  return prompts;
}

// Greedy continuations of Prompts(), one request at a time.
std::vector<std::vector<int32_t>> GreedyOutputs(RouterCluster& cluster, int32_t max_tokens) {
  std::vector<std::vector<int32_t>> outputs;
  for (const std::vector<int32_t>& prompt : Prompts()) {
    StreamOutput out = cluster.Stream(GreedyRequest(prompt, max_tokens), absl::Seconds(60));
    EXPECT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_EQ(out.num_errors, 0);
    EXPECT_EQ(out.tokens.size(), static_cast<size_t>(max_tokens));
    outputs.push_back(out.tokens);
  }
  return outputs;
}

TEST(GpuClusterTest, GreedyThroughTheDisaggregatedClusterEqualsTheColocatedEngine) {
  REQUIRE_TWO_GPUS();
  constexpr int32_t kTokens = 32;
  std::vector<std::vector<int32_t>> colocated;
  {
    auto cluster = StartColocated();
    ASSERT_NE(cluster, nullptr);
    colocated = GreedyOutputs(*cluster, kTokens);
  }
  auto cluster = StartDisaggregated(1);
  ASSERT_NE(cluster, nullptr);
  EXPECT_THAT(ReadAll(cluster->prefill(0).process->log_path()),
              HasSubstr("event=kv_transport kind=nccl"));
  EXPECT_THAT(ReadAll(cluster->decode(0).process->log_path()),
              HasSubstr("event=kv_transport kind=nccl"));
  std::vector<std::vector<int32_t>> disaggregated = GreedyOutputs(*cluster, kTokens);
  ASSERT_EQ(disaggregated.size(), colocated.size());
  for (size_t i = 0; i < colocated.size(); ++i) {
    EXPECT_EQ(disaggregated[i], colocated[i]) << "prompt " << i;
  }
  // The bf16 GPU engine also reproduces the fp32 transformers reference on the fixture, up
  // to the first near-tie: a step whose reference top-1 margin is below twice the backend's
  // max |dlogit| on this fixture (0.75; docs/cuda_backend.md), where bf16 rounding may pick
  // the other token (as in cuda_engine_sampling_test's GreedyAloneMatchesReference).
  constexpr float kNearTie = 1.5f;
  nlohmann::json golden = Golden();
  for (int i = 0; i < 6; ++i) {
    const auto want = golden["prompts"][i]["greedy"].get<std::vector<int32_t>>();
    const auto margins = golden["prompts"][i]["greedy_margins"].get<std::vector<float>>();
    size_t must = 0;
    while (must < want.size() && margins[must] > kNearTie) ++must;
    const std::vector<int32_t>& got = disaggregated[static_cast<size_t>(i)];
    ASSERT_GE(got.size(), must) << "prompt " << i;
    EXPECT_TRUE(std::equal(want.begin(), want.begin() + must, got.begin()))
        << "prompt " << i << " differs from the reference before its first near-tie (step "
        << must << ")";
  }

  // The same requests all at once (batched prefill, transfers in flight together).
  std::vector<std::vector<int32_t>> prompts = Prompts();
  std::vector<StreamOutput> outs(prompts.size() * 3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < outs.size(); ++i) {
    threads.emplace_back([&, i] {
      outs[i] = cluster->Stream(GreedyRequest(prompts[i % prompts.size()], kTokens),
                                absl::Seconds(60));
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < outs.size(); ++i) {
    ASSERT_TRUE(outs[i].status.ok()) << i << ": " << outs[i].status.error_message();
    EXPECT_EQ(outs[i].tokens, colocated[i % prompts.size()]) << "concurrent request " << i;
    EXPECT_EQ(outs[i].finished.served_by().prefill_worker(), "prefill-0");
  }
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

// A seeded sampled request long enough to be interrupted.
v1::GenerateRequest SeededLongRequest(int32_t max_tokens) {
  v1::GenerateRequest r = GreedyRequest(LongPrompt(300), max_tokens);
  r.mutable_sampling()->set_temperature(0.9f);
  r.mutable_sampling()->set_top_k(50);
  r.mutable_sampling()->set_seed(1234);
  return r;
}

bool Running(const WorkerProcess& w) {
  auto stub = internal::v1::DecodeWorker::NewStub(
      grpc::CreateChannel(w.grpc_address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  internal::v1::LoadReport report;
  return stub->GetLoad(&context, internal::v1::GetLoadRequest(), &report).ok() &&
         report.num_running() > 0;
}

TEST(GpuClusterTest, KilledDecodeWorkerMigratesThenItsRestartGetsANewCommunicator) {
  REQUIRE_TWO_GPUS();
  auto cluster = StartDisaggregated(2, {"--decode_policy=round_robin"});
  ASSERT_NE(cluster, nullptr);
  StreamOutput reference = cluster->Stream(SeededLongRequest(400), absl::Seconds(60));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
  ASSERT_EQ(reference.tokens.size(), 400u);

  int victim = -1;
  size_t streamed_before_kill = 0;
  StreamOutput migrated =
      cluster->Stream(SeededLongRequest(400), absl::Seconds(60), [&](int n) {
        if (victim >= 0 || n < 20) return;
        for (int i = 0; i < 2 && victim < 0; ++i) {
          if (Running(cluster->decode(i))) {
            victim = i;
            streamed_before_kill = static_cast<size_t>(n);
            cluster->decode(i).process->Signal(SIGKILL);
          }
        }
      });
  ASSERT_GE(victim, 0);
  ASSERT_TRUE(migrated.status.ok()) << migrated.status.error_message();
  EXPECT_EQ(migrated.num_errors, 0);
  EXPECT_EQ(migrated.num_finished, 1);
  EXPECT_GE(migrated.finished.served_by().migrations(), 1);
  // No token lost or repeated: exactly max_tokens, and everything streamed before the kill
  // is the undisturbed run's. After it the new worker recomputes the KV of prompt + output
  // in one prefill, which in bf16 is not bit-identical to the KV the killed worker built
  // token by token, so a seeded draw near a probability boundary may differ later
  // (on the fp32 CPU backend the whole stream is identical: router_failures_test).
  ASSERT_EQ(migrated.tokens.size(), reference.tokens.size());
  EXPECT_TRUE(std::equal(reference.tokens.begin(),
                         reference.tokens.begin() + static_cast<ptrdiff_t>(streamed_before_kill),
                         migrated.tokens.begin()));
  size_t same = 0;
  while (same < reference.tokens.size() && migrated.tokens[same] == reference.tokens[same]) ++same;
  std::cout << "killed after " << streamed_before_kill << " tokens; identical to the "
            << "undisturbed run for the first " << same << " of " << reference.tokens.size()
            << "\n";

  // The survivor serves the next requests; then the victim comes back on its port as a new
  // incarnation, and the prefill worker must build a new communicator to reach it.
  std::vector<int32_t> expected;
  {
    StreamOutput out = cluster->Stream(GreedyRequest(LongPrompt(600), 16), absl::Seconds(60));
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    expected = out.tokens;
  }
  ASSERT_TRUE(cluster->RestartDecode(victim).ok());
  ASSERT_TRUE(cluster->WaitServing().ok());
  std::string victim_name = absl::StrCat("decode-", victim);
  int served_by_victim = 0;
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (served_by_victim < 2 && absl::Now() < deadline) {
    StreamOutput out = cluster->Stream(GreedyRequest(LongPrompt(600), 16), absl::Seconds(60));
    if (!out.status.ok()) {  // the router may still see the old incarnation for a poll
      absl::SleepFor(absl::Milliseconds(200));
      continue;
    }
    EXPECT_EQ(out.tokens, expected);
    if (out.finished.served_by().decode_worker() == victim_name) ++served_by_victim;
  }
  EXPECT_EQ(served_by_victim, 2) << "the restarted decode worker never received KV";
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(GpuClusterTest, KilledPrefillWorkerRestartsAndTheDecodeSideAcceptsItsNewCommunicator) {
  REQUIRE_TWO_GPUS();
  auto cluster = StartDisaggregated(1);
  ASSERT_NE(cluster, nullptr);
  StreamOutput before = cluster->Stream(GreedyRequest(LongPrompt(800), 16), absl::Seconds(60));
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();

  // Killed while idle, restarted on its port: its communicator with the decode worker is
  // gone with it; the decode worker must notice and accept the new process's.
  ASSERT_TRUE(cluster->RestartPrefill(0).ok());
  StreamOutput after;
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  int ok = 0;
  while (ok < 3 && absl::Now() < deadline) {
    after = cluster->Stream(GreedyRequest(LongPrompt(800), 16), absl::Seconds(60));
    if (!after.status.ok()) {
      absl::SleepFor(absl::Milliseconds(200));
      continue;
    }
    EXPECT_EQ(after.tokens, before.tokens);
    ++ok;
  }
  EXPECT_EQ(ok, 3) << after.status.error_message();

  // Killed while requests are in flight: they fail or are retried, never hang, and every
  // block on the decode side is released.
  std::vector<StreamOutput> outs(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < outs.size(); ++i) {
    threads.emplace_back([&, i] {
      outs[i] = cluster->Stream(GreedyRequest(LongPrompt(900), 64), absl::Seconds(60));
    });
  }
  absl::SleepFor(absl::Milliseconds(30));
  cluster->prefill(0).process->Signal(SIGKILL);
  for (std::thread& t : threads) t.join();  // each stream ends (its deadline bounds it)
  ASSERT_TRUE(cluster->prefill(0).process->Wait(absl::Seconds(10)).ok());
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
  ASSERT_TRUE(cluster->RestartPrefill(0).ok());
  deadline = absl::Now() + absl::Seconds(30);
  ok = 0;
  while (ok < 1 && absl::Now() < deadline) {
    after = cluster->Stream(GreedyRequest(LongPrompt(800), 16), absl::Seconds(60));
    if (after.status.ok()) {
      EXPECT_EQ(after.tokens, before.tokens);
      ++ok;
    } else {
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
  EXPECT_EQ(ok, 1) << after.status.error_message();
  freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

}  // namespace
}  // namespace tandem::testing
