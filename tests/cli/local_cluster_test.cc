// tandem up's choice of KV transport: NCCL only between different GPUs.
#include "cli/local_cluster.h"

#include "gtest/gtest.h"

namespace tandem::cli {
namespace {

TEST(ClusterKvTransportTest, AutoFallsBackToTcpWhenRolesShareAGpu) {
  // Every worker on --device (the default), or overlapping device lists: tcp.
  EXPECT_EQ(ClusterKvTransport("auto", true, 1, 0, {}, {}), "tcp");
  EXPECT_EQ(ClusterKvTransport("auto", true, 2, 0, {0, 1}, {1}), "tcp");
  EXPECT_EQ(ClusterKvTransport("auto", true, 1, 3, {}, {3}), "tcp");
  // Disjoint devices: auto stays (the workers resolve it to nccl).
  EXPECT_EQ(ClusterKvTransport("auto", true, 1, 0, {0}, {1}), "auto");
  EXPECT_EQ(ClusterKvTransport("auto", true, 2, 0, {0, 1}, {2, 3}), "auto");
  // No prefill workers (colocated), the CPU backend, or an explicit choice: unchanged.
  EXPECT_EQ(ClusterKvTransport("auto", true, 0, 0, {}, {}), "auto");
  EXPECT_EQ(ClusterKvTransport("auto", false, 1, 0, {}, {}), "auto");
  EXPECT_EQ(ClusterKvTransport("nccl", true, 1, 0, {}, {}), "nccl");
  EXPECT_EQ(ClusterKvTransport("tcp", true, 1, 0, {0}, {1}), "tcp");
}

}  // namespace
}  // namespace tandem::cli
