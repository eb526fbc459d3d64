// Choosing the KV transport (--kv_transport) and the worker flags that depend on it.
#include "kv_transfer/transport_select.h"

#include "common/service/worker/worker_options.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

TEST(TransportSelectTest, AutoPicksNcclOnlyForCudaWorkersInBuildsThatHaveIt) {
  EXPECT_EQ(*ResolveKvTransport("auto", false), KvTransportKind::kTcp);
  EXPECT_EQ(*ResolveKvTransport("auto", true),
            NcclTransportCompiled() ? KvTransportKind::kNccl : KvTransportKind::kTcp);
  EXPECT_EQ(*ResolveKvTransport("tcp", true), KvTransportKind::kTcp);
  EXPECT_EQ(*ResolveKvTransport("tcp", false), KvTransportKind::kTcp);
}

TEST(TransportSelectTest, BadChoicesNameTheFlag) {
  auto unknown = ResolveKvTransport("rdma", true);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("--kv_transport"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("rdma"));
  auto cpu = ResolveKvTransport("nccl", false);
  EXPECT_EQ(cpu.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cpu.status().message(), HasSubstr("--backend=cuda"));
  auto nccl = ResolveKvTransport("nccl", true);
  if (NcclTransportCompiled()) {
    EXPECT_EQ(*nccl, KvTransportKind::kNccl);
  } else {
    EXPECT_EQ(nccl.status().code(), absl::StatusCode::kUnimplemented);
  }
}

TEST(TransportSelectTest, TcpRefusesADeviceView) {
  KvCacheView device{.memory = KvMemory::kCudaDevice, .cuda_device = 0};
  EXPECT_EQ(MakeKvSender(KvTransportKind::kTcp, device, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StartKvReceiver(KvTransportKind::kTcp, device, {}, {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(TransportSelectTest, WorkerOptionsValidateTheTransport) {
  WorkerOptions o{.model_dir = testing::FixturePath("models/llama3-tiny")};
  EXPECT_TRUE(ValidateWorkerOptions(o).ok()) << ValidateWorkerOptions(o);
  o.kv_transport = "tcp";
  EXPECT_TRUE(ValidateWorkerOptions(o).ok());
  o.kv_transport = "nccl";  // with --backend=cpu
  absl::Status s = ValidateWorkerOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--kv_transport=nccl"));
  o.kv_transport = "smoke-signals";
  s = ValidateWorkerOptions(o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("--kv_transport"));
}

}  // namespace
}  // namespace tandem
