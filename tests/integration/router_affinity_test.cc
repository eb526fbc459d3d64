// Prefix-affinity routing across real processes: once a prefill worker has a long prompt's
// blocks cached (and says so in its load report), requests sharing that prefix go to it and
// reuse its cache.
#include <numeric>

#include "gtest/gtest.h"
#include "tests/integration/router_cluster.h"

namespace tandem::testing {
namespace {

std::vector<int32_t> Prompt(int32_t first_token, size_t length) {
  std::vector<int32_t> ids(length);
  for (size_t i = 0; i < length; ++i) ids[i] = 10 + static_cast<int32_t>((first_token + 7 * i) % 900);
  return ids;
}

TEST(RouterAffinityTest, SharedPrefixFollowsTheWorkerThatCachedIt) {
  auto cluster = RouterCluster::Start({.num_prefill = 2, .num_decode = 1,
                                       .router_flags = {"--prefill_policy=prefix_affinity"}});
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::vector<int32_t> prefix = Prompt(3, 160);  // 10 full blocks
  StreamOutput first = (*cluster)->Stream(GreedyRequest(prefix, 4));
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  std::string owner = first.finished.served_by().prefill_worker();
  ASSERT_FALSE(owner.empty());
  // The worker's engine refreshes its summary every few idle steps; the router polls it.
  absl::SleepFor(absl::Seconds(2));
  for (int r = 0; r < 4; ++r) {
    std::vector<int32_t> prompt = prefix;
    std::vector<int32_t> suffix = Prompt(100 + r, 20);
    prompt.insert(prompt.end(), suffix.begin(), suffix.end());
    StreamOutput out = (*cluster)->Stream(GreedyRequest(prompt, 4));
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_EQ(out.finished.served_by().prefill_worker(), owner) << "request " << r;
    EXPECT_EQ(out.finished.usage().cached_prompt_tokens(), 160) << "request " << r;
  }
  EXPECT_TRUE((*cluster)->WaitAllBlocksFree().ok());
}

}  // namespace
}  // namespace tandem::testing
