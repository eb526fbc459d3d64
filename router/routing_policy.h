// Routing policies: pick one worker among healthy candidates. Prefill and decode policies
// are chosen separately. Policies are called from many gRPC threads; each implementation
// is thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "router/worker_view.h"

namespace tandem::router {

enum class PolicyKind { kRoundRobin, kLeastLoad, kPrefixAffinity };

// "round_robin" | "least_load" | "prefix_affinity"; InvalidArgument naming the flag otherwise.
absl::StatusOr<PolicyKind> ParsePolicyKind(std::string_view name);

class RoutingPolicy {
 public:
  virtual ~RoutingPolicy() = default;
  // Index into `candidates`, or nullopt when it is empty.
  virtual std::optional<size_t> Pick(std::span<const WorkerView> candidates,
                                     const RoutingRequest& request) = 0;
};

std::unique_ptr<RoutingPolicy> MakeRoutingPolicy(PolicyKind kind);

// Blocks of `request` that `worker` has cached, counted from the first block and stopping
// at the first miss (a prefix cache can only reuse a prefix).
int32_t CachedPrefixBlocks(const WorkerView& worker, const RoutingRequest& request);

}  // namespace tandem::router
