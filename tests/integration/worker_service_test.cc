// The operational surface of a worker process: the named grpc.health.v1 service is SERVING
// once it is ready, and --router makes it Register itself (retrying until the router is up).
#include <future>
#include <mutex>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/integration/worker_pair.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {
namespace {

// grpc.health.v1.Health/Check by hand (its generated code is not installed): request
// field 1 is the service name; response field 1 is the status enum, SERVING = 1.
grpc::Status HealthCheck(const std::string& address, const std::string& service, int* status) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  std::string request = std::string(1, '\x0a') + static_cast<char>(service.size()) + service;
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1), response_buffer;
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(5));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) { done.set_value(s); });
  grpc::Status result = done.get_future().get();
  std::vector<grpc::Slice> slices;
  if (result.ok() && response_buffer.Dump(&slices).ok()) {
    std::string bytes;
    for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    *status = bytes.size() == 2 && bytes[0] == '\x08' ? bytes[1] : 0;  // absent field: 0
  }
  return result;
}

TEST(WorkerServiceTest, NamedHealthServiceIsServing) {
  auto pair = WorkerPair::Start("llama3-tiny");
  ASSERT_TRUE(pair.ok()) << pair.status();
  int status = -1;
  ASSERT_TRUE(HealthCheck((*pair)->decode().grpc_address, "tandem.internal.v1.DecodeWorker",
                          &status).ok());
  EXPECT_EQ(status, 1);
  ASSERT_TRUE(HealthCheck((*pair)->prefill().grpc_address, "tandem.internal.v1.PrefillWorker",
                          &status).ok());
  EXPECT_EQ(status, 1);
  grpc::Status unknown = HealthCheck((*pair)->prefill().grpc_address, "no.such.Service", &status);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
}

class FakeRegistry final : public internal::v1::Registry::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const internal::v1::RegisterRequest* request,
                        internal::v1::RegisterResponse* response) override {
    std::lock_guard<std::mutex> lock(mu_);
    workers_.push_back(request->worker());
    response->set_report_interval_ms(250);
    return grpc::Status::OK;
  }
  std::vector<internal::v1::WorkerIdentity> workers() {
    std::lock_guard<std::mutex> lock(mu_);
    return workers_;
  }

 private:
  std::mutex mu_;
  std::vector<internal::v1::WorkerIdentity> workers_;
};

TEST(WorkerServiceTest, RegistersWithTheRouter) {
  FakeRegistry registry;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&registry);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);
  auto decode = StartWorker(TANDEM_DECODE_BINARY, "llama3-tiny", "decode-r",
                            {"--router=127.0.0.1:" + std::to_string(port)});
  ASSERT_TRUE(decode.ok()) << decode.status();
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (registry.workers().empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  auto workers = registry.workers();
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_EQ(workers[0].name(), "decode-r");
  EXPECT_EQ(workers[0].grpc_address(), decode->grpc_address);
  EXPECT_EQ(workers[0].incarnation(), decode->incarnation);
  EXPECT_EQ(workers[0].role(), internal::v1::ROLE_DECODE);
  EXPECT_FALSE(workers[0].model_fingerprint().empty());
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

}  // namespace
}  // namespace tandem::testing
