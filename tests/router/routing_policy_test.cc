#include "router/routing_policy.h"

#include <map>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem::router {
namespace {

WorkerView Worker(std::string name, int running, std::vector<uint64_t> cached = {}) {
  WorkerView w{.name = std::move(name), .num_blocks_free = 100, .num_blocks_total = 100,
               .num_running = running};
  w.cached_block_hashes.insert(cached.begin(), cached.end());
  return w;
}

TEST(RoutingPolicyTest, ParsesNamesAndRejectsOthersByName) {
  EXPECT_EQ(*ParsePolicyKind("least_load"), PolicyKind::kLeastLoad);
  EXPECT_EQ(std::string(ParsePolicyKind("random").status().message()),
            "routing policy must be round_robin, least_load or prefix_affinity, got \"random\"");
}

TEST(RoutingPolicyTest, EmptyCandidatesPickNothing) {
  for (PolicyKind k : {PolicyKind::kRoundRobin, PolicyKind::kLeastLoad,
                       PolicyKind::kPrefixAffinity}) {
    EXPECT_FALSE(MakeRoutingPolicy(k)->Pick({}, {}).has_value());
  }
}

TEST(RoutingPolicyTest, RoundRobinVisitsEveryWorkerEvenly) {
  std::vector<WorkerView> w = {Worker("a", 0), Worker("b", 9), Worker("c", 3)};
  auto policy = MakeRoutingPolicy(PolicyKind::kRoundRobin);
  std::map<size_t, int> hits;
  for (int i = 0; i < 30; ++i) ++hits[*policy->Pick(w, {})];
  EXPECT_EQ(hits, (std::map<size_t, int>{{0, 10}, {1, 10}, {2, 10}}));
}

TEST(RoutingPolicyTest, LeastLoadPicksTheIdlestAndSharesTies) {
  std::vector<WorkerView> w = {Worker("a", 5), Worker("b", 1), Worker("c", 1)};
  auto policy = MakeRoutingPolicy(PolicyKind::kLeastLoad);
  std::map<size_t, int> hits;
  for (int i = 0; i < 10; ++i) ++hits[*policy->Pick(w, {})];
  EXPECT_EQ(hits[0], 0);
  EXPECT_EQ(hits[1], 5);
  EXPECT_EQ(hits[2], 5);
}

TEST(RoutingPolicyTest, PrefixAffinityFollowsTheCacheUntilLoadOutweighsIt) {
  RoutingRequest request{.num_prompt_tokens = 128, .prompt_block_hashes = {1, 2, 3, 4, 5, 6, 7, 8}};
  auto policy = MakeRoutingPolicy(PolicyKind::kPrefixAffinity);
  // b holds the first 6 blocks; equal load: b wins.
  std::vector<WorkerView> w = {Worker("a", 0), Worker("b", 0, {1, 2, 3, 4, 5, 6})};
  EXPECT_EQ(*policy->Pick(w, request), 1u);
  // Only a prefix counts: blocks 2..6 without block 1 are worthless.
  w[1] = Worker("b", 0, {2, 3, 4, 5, 6});
  EXPECT_EQ(CachedPrefixBlocks(w[1], request), 0);
  // b with the prefix but far busier: a wins.
  w[1] = Worker("b", 3, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(*policy->Pick(w, request), 0u);
}

}  // namespace
}  // namespace tandem::router
