#include "router/worker_registry.h"

#include "gtest/gtest.h"

namespace tandem::router {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

WorkerView View(std::string name, WorkerRole role, uint64_t incarnation = 1) {
  return {.name = std::move(name), .incarnation = incarnation, .role = role};
}

std::vector<std::string> Names(const std::vector<WorkerView>& views) {
  std::vector<std::string> out;
  for (const WorkerView& v : views) out.push_back(v.name);
  return out;
}

TEST(WorkerRegistryTest, RolesAndStaleReports) {
  WorkerRegistry registry({.report_timeout = absl::Seconds(5)});
  registry.Upsert(View("p0", WorkerRole::kPrefill), kT0);
  registry.Upsert(View("d0", WorkerRole::kDecode), kT0);
  registry.Upsert(View("c0", WorkerRole::kColocated), kT0 + absl::Seconds(4));
  EXPECT_EQ(Names(registry.Candidates(WorkerRole::kPrefill, kT0 + absl::Seconds(1))),
            (std::vector<std::string>{"c0", "p0"}));
  // t=6s: p0 and d0 went quiet for more than 5 s.
  EXPECT_EQ(Names(registry.Candidates(WorkerRole::kDecode, kT0 + absl::Seconds(6))),
            (std::vector<std::string>{"c0"}));
}

TEST(WorkerRegistryTest, CircuitBreakerOpensThenLetsATrialThrough) {
  WorkerRegistry registry({.report_timeout = absl::Hours(1), .breaker_failures = 2,
                           .breaker_cooldown = absl::Seconds(2)});
  registry.Upsert(View("d0", WorkerRole::kDecode), kT0);
  registry.RecordFailure("d0", kT0);
  EXPECT_EQ(registry.Candidates(WorkerRole::kDecode, kT0).size(), 1u);  // one failure: closed
  registry.RecordFailure("d0", kT0);
  EXPECT_TRUE(registry.Candidates(WorkerRole::kDecode, kT0 + absl::Seconds(1)).empty());
  // cooldown over: half-open, a trial goes through; success closes it
  EXPECT_EQ(registry.Candidates(WorkerRole::kDecode, kT0 + absl::Seconds(3)).size(), 1u);
  registry.RecordSuccess("d0");
  registry.RecordFailure("d0", kT0 + absl::Seconds(3));
  EXPECT_EQ(registry.Candidates(WorkerRole::kDecode, kT0 + absl::Seconds(3)).size(), 1u);
}

TEST(WorkerRegistryTest, NewIncarnationIsReportedAndResetsState) {
  WorkerRegistry registry({.breaker_failures = 1});
  EXPECT_FALSE(registry.Upsert(View("d0", WorkerRole::kDecode, 7), kT0));
  registry.AddInflight("d0", 3);
  registry.RecordFailure("d0", kT0);
  EXPECT_FALSE(registry.Upsert(View("d0", WorkerRole::kDecode, 7), kT0));  // same process
  EXPECT_TRUE(registry.Upsert(View("d0", WorkerRole::kDecode, 8), kT0));   // restarted
  std::vector<WorkerView> c = registry.Candidates(WorkerRole::kDecode, kT0);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].num_inflight, 0);
}

}  // namespace
}  // namespace tandem::router
