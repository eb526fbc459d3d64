#include "router/routing_policy.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tandem::router {
namespace {

class RoundRobin final : public RoutingPolicy {
 public:
  std::optional<size_t> Pick(std::span<const WorkerView> candidates,
                             const RoutingRequest&) override {
    if (candidates.empty()) return std::nullopt;
    return next_.fetch_add(1, std::memory_order_relaxed) % candidates.size();
  }

 private:
  std::atomic<uint64_t> next_{0};
};

// Lowest cost wins; ties rotate so equal workers share load.
class CostPolicy : public RoutingPolicy {
 public:
  std::optional<size_t> Pick(std::span<const WorkerView> candidates,
                             const RoutingRequest& request) override {
    if (candidates.empty()) return std::nullopt;
    std::vector<double> costs;
    for (const WorkerView& w : candidates) costs.push_back(Cost(w, request));
    double best = *std::min_element(costs.begin(), costs.end());
    std::vector<size_t> ties;
    for (size_t i = 0; i < costs.size(); ++i) {
      if (costs[i] <= best + 1e-9) ties.push_back(i);
    }
    return ties[next_.fetch_add(1, std::memory_order_relaxed) % ties.size()];
  }

 protected:
  virtual double Cost(const WorkerView& worker, const RoutingRequest& request) const = 0;

 private:
  std::atomic<uint64_t> next_{0};
};

class LeastLoad final : public CostPolicy {
  double Cost(const WorkerView& worker, const RoutingRequest&) const override {
    return worker.Load();
  }
};

// Like Dynamo's KV router: the prefill work a worker would do (prompt blocks it lacks)
// plus its load, in units of blocks.
class PrefixAffinity final : public CostPolicy {
  double Cost(const WorkerView& worker, const RoutingRequest& request) const override {
    double uncached = static_cast<double>(request.prompt_block_hashes.size()) -
                      CachedPrefixBlocks(worker, request);
    constexpr double kBlocksPerLoadUnit = 4.0;  // one queued request ~ 4 blocks of prefill
    return uncached + kBlocksPerLoadUnit * worker.Load();
  }
};

}  // namespace

absl::StatusOr<PolicyKind> ParsePolicyKind(std::string_view name) {
  if (name == "round_robin") return PolicyKind::kRoundRobin;
  if (name == "least_load") return PolicyKind::kLeastLoad;
  if (name == "prefix_affinity") return PolicyKind::kPrefixAffinity;
  return absl::InvalidArgumentError(absl::StrCat(
      "routing policy must be round_robin, least_load or prefix_affinity, got \"",
      std::string(name), "\""));
}

std::unique_ptr<RoutingPolicy> MakeRoutingPolicy(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kRoundRobin:
      return std::make_unique<RoundRobin>();
    case PolicyKind::kLeastLoad:
      return std::make_unique<LeastLoad>();
    case PolicyKind::kPrefixAffinity:
      return std::make_unique<PrefixAffinity>();
  }
  return nullptr;
}

int32_t CachedPrefixBlocks(const WorkerView& worker, const RoutingRequest& request) {
  int32_t n = 0;
  for (uint64_t hash : request.prompt_block_hashes) {
    if (!worker.cached_block_hashes.contains(hash)) break;
    ++n;
  }
  return n;
}

}  // namespace tandem::router
