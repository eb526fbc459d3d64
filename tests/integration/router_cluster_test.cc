// The router in front of real tandem-prefill / tandem-decode processes: reference outputs,
// concurrency, cancellation and deadlines, worker deaths (migration, retry, restart) and
// overload. Workers run --threads=1 on the llama3-tiny fixture.
#include <csignal>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/router_cluster.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;

struct GoldenPrompt {
  std::vector<int32_t> ids;
  std::vector<int32_t> greedy;
};

std::vector<GoldenPrompt> Golden() {
  nlohmann::json golden = ReadJsonFixture("models/llama3-tiny/golden.json");
  std::vector<GoldenPrompt> out;
  for (const auto& p : golden["prompts"]) {
    out.push_back({p["ids"].get<std::vector<int32_t>>(), p["greedy"].get<std::vector<int32_t>>()});
  }
  return out;
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

void ExpectGreedyMatchesReference(RouterCluster& cluster) {
  for (const GoldenPrompt& p : Golden()) {
    auto request = GreedyRequest(p.ids, static_cast<int32_t>(p.greedy.size()));
    StreamOutput streamed = cluster.Stream(request);
    ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
    EXPECT_EQ(streamed.tokens, p.greedy);
    EXPECT_EQ(streamed.num_finished, 1);
    EXPECT_EQ(streamed.finished.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(streamed.finished.usage().prompt_tokens(), static_cast<int>(p.ids.size()));
    EXPECT_EQ(streamed.finished.usage().completion_tokens(), static_cast<int>(p.greedy.size()));
    EXPECT_FALSE(streamed.finished.served_by().decode_worker().empty());
    EXPECT_FALSE(streamed.finished.served_by().prefill_worker().empty());
    EXPECT_GT(streamed.finished.timings().total_ms(), 0.0);

    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::GenerateResponse unary;
    grpc::Status s = cluster.stub().Generate(&context, request, &unary);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(unary.completions_size(), 1);
    EXPECT_EQ(std::vector<int32_t>(unary.completions(0).token_ids().begin(),
                                   unary.completions(0).token_ids().end()),
              p.greedy);
    EXPECT_EQ(unary.usage().completion_tokens(), static_cast<int>(p.greedy.size()));
  }
  EXPECT_TRUE(cluster.WaitAllBlocksFree().ok());
}

TEST(RouterClusterTest, GreedyMatchesReference1P1D) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  ASSERT_TRUE(cluster->WaitServing().ok());
  ExpectGreedyMatchesReference(*cluster);
}

// The prefill workers send the KV only after the first token (--kv_overlap=false): the
// other hand-off path of PrefillCall gives the same tokens and frees every block.
TEST(RouterClusterTest, GreedyMatchesReferenceWithoutKvOverlap) {
  RouterClusterOptions o;
  o.prefill_flags = {"--kv_overlap=false"};
  auto cluster = RouterCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_TRUE((*cluster)->WaitServing().ok());
  ExpectGreedyMatchesReference(**cluster);
}

TEST(RouterClusterTest, GreedyMatchesReference2P2D) {
  auto cluster = StartCluster(2, 2, {"--prefill_policy=round_robin", "--decode_policy=round_robin"});
  ASSERT_NE(cluster, nullptr);
  ExpectGreedyMatchesReference(*cluster);
}

TEST(RouterClusterTest, ColocatedFallbackWithoutPrefillWorkers) {
  auto cluster = StartCluster(0, 1);
  ASSERT_NE(cluster, nullptr);
  GoldenPrompt p = Golden()[0];
  StreamOutput out = cluster->Stream(GreedyRequest(p.ids, 16));
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, std::vector<int32_t>(p.greedy.begin(), p.greedy.begin() + 16));
  EXPECT_EQ(out.finished.served_by().prefill_worker(), out.finished.served_by().decode_worker());
}

TEST(RouterClusterTest, TwoHundredConcurrentStreamsCompleteAndFreeEveryBlock) {
  auto cluster = StartCluster(2, 2);
  ASSERT_NE(cluster, nullptr);
  std::vector<GoldenPrompt> golden = Golden();
  std::vector<StreamOutput> outputs(200);
  std::vector<std::thread> threads;
  for (int i = 0; i < 200; ++i) {
    threads.emplace_back([&, i] {
      const GoldenPrompt& p = golden[static_cast<size_t>(i) % golden.size()];
      outputs[static_cast<size_t>(i)] = cluster->Stream(GreedyRequest(p.ids, 8), absl::Seconds(50));
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 200; ++i) {
    const GoldenPrompt& p = golden[static_cast<size_t>(i) % golden.size()];
    const StreamOutput& out = outputs[static_cast<size_t>(i)];
    ASSERT_TRUE(out.status.ok()) << i << ": " << out.status.error_message();
    EXPECT_EQ(out.tokens, std::vector<int32_t>(p.greedy.begin(), p.greedy.begin() + 8)) << i;
  }
  absl::Status freed = cluster->WaitAllBlocksFree();
  EXPECT_TRUE(freed.ok()) << freed;
}

TEST(RouterClusterTest, HostileRequestsThroughTheServiceNameTheField) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  struct Case {
    v1::GenerateRequest request;
    grpc::StatusCode code;
    std::string field;
  };
  std::vector<Case> cases;
  cases.push_back({v1::GenerateRequest(), grpc::StatusCode::INVALID_ARGUMENT, "prompt"});
  v1::GenerateRequest bad_id = GreedyRequest({0, 5000}, 4);
  cases.push_back({bad_id, grpc::StatusCode::INVALID_ARGUMENT, "token_ids.ids[1]"});
  v1::GenerateRequest bad_request_id = GreedyRequest({0, 5}, 4);
  bad_request_id.set_request_id("no spaces allowed");
  cases.push_back({bad_request_id, grpc::StatusCode::INVALID_ARGUMENT, "request_id"});
  v1::GenerateRequest long_prompt = GreedyRequest(std::vector<int32_t>(1100, 5), 4);
  cases.push_back({long_prompt, grpc::StatusCode::INVALID_ARGUMENT, "prompt"});
  v1::GenerateRequest stops = GreedyRequest({0, 5}, 4);
  for (int i = 0; i < 17; ++i) stops.mutable_sampling()->add_stop(absl::StrCat("s", i));
  cases.push_back({stops, grpc::StatusCode::INVALID_ARGUMENT, "sampling.stop"});
  v1::GenerateRequest big_max = GreedyRequest({0, 5}, 5000);
  cases.push_back({big_max, grpc::StatusCode::INVALID_ARGUMENT, "sampling.max_tokens"});
  v1::GenerateRequest bad_top_p = GreedyRequest({0, 5}, 4);
  bad_top_p.mutable_sampling()->set_top_p(2.0f);
  cases.push_back({bad_top_p, grpc::StatusCode::INVALID_ARGUMENT, "sampling.top_p"});
  v1::GenerateRequest oversized;
  oversized.set_text(std::string(5 << 20, 'a'));
  cases.push_back({oversized, grpc::StatusCode::RESOURCE_EXHAUSTED, ""});
  for (const Case& c : cases) {
    StreamOutput out = cluster->Stream(c.request);
    EXPECT_EQ(out.status.error_code(), c.code) << out.status.error_message();
    EXPECT_THAT(out.status.error_message(), HasSubstr(c.field));
    grpc::ClientContext context;
    v1::GenerateResponse response;
    EXPECT_EQ(cluster->stub().Generate(&context, c.request, &response).error_code(), c.code);
  }
  // Still healthy afterwards.
  GoldenPrompt p = Golden()[0];
  EXPECT_TRUE(cluster->Stream(GreedyRequest(p.ids, 4)).status.ok());
  EXPECT_TRUE(cluster->router().Running());
}

TEST(RouterClusterTest, TokenizeAndModelInfo) {
  auto cluster = StartCluster(1, 1);
  ASSERT_NE(cluster, nullptr);
  GoldenPrompt p = Golden()[0];
  grpc::ClientContext c1;
  v1::TokenizeRequest tr;
  tr.set_text("Licensed under the Apache License");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(cluster->stub().Tokenize(&c1, tr, &tokens).ok());
  EXPECT_EQ(std::vector<int32_t>(tokens.token_ids().begin(), tokens.token_ids().end()), p.ids);
  grpc::ClientContext c2;
  v1::ModelInfoResponse info;
  ASSERT_TRUE(cluster->stub().ModelInfo(&c2, v1::ModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), "llama3-tiny");
  EXPECT_EQ(info.vocab_size(), 1024);
  EXPECT_EQ(info.max_context_tokens(), 1024);
  EXPECT_EQ(info.num_prefill_workers(), 1);
  EXPECT_EQ(info.num_decode_workers(), 1);
}

TEST(RouterClusterTest, WorkersThatRegisterAreRouted) {
  RouterClusterOptions o;
  o.workers_register = true;
  auto cluster = RouterCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // Registration is asynchronous: the router may be SERVING with the decode worker alone
  // (colocated) before the prefill worker registers. Wait until it sees both.
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    grpc::ClientContext c;
    c.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::ModelInfoResponse info;
    if ((*cluster)->stub().ModelInfo(&c, v1::ModelInfoRequest(), &info).ok() &&
        info.num_prefill_workers() == 1 && info.num_decode_workers() == 1) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  GoldenPrompt p = Golden()[1];
  StreamOutput out = (*cluster)->Stream(GreedyRequest(p.ids, 16));
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.tokens, std::vector<int32_t>(p.greedy.begin(), p.greedy.begin() + 16));
  EXPECT_EQ(out.finished.served_by().prefill_worker(), "prefill-0");
  EXPECT_EQ(out.finished.served_by().decode_worker(), "decode-0");
}

}  // namespace
}  // namespace tandem::testing
