#include "common/service/worker/router_registration.h"

#include <random>

#include "absl/time/time.h"
#include "common/logging.h"
#include "grpcpp/grpcpp.h"
#include "tandem/internal/v1/worker.grpc.pb.h"

namespace tandem {

RouterRegistration::RouterRegistration(std::string router_address,
                                       internal::v1::WorkerIdentity identity)
    : router_address_(std::move(router_address)), identity_(std::move(identity)) {
  thread_ = std::thread([this] { Loop(); });
}

RouterRegistration::~RouterRegistration() { Stop(); }

void RouterRegistration::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RouterRegistration::Loop() {
  auto stub = internal::v1::Registry::NewStub(
      grpc::CreateChannel(router_address_, grpc::InsecureChannelCredentials()));
  std::mt19937_64 rng(identity_.incarnation());
  absl::Duration backoff = absl::Milliseconds(100);
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    internal::v1::RegisterRequest request;
    *request.mutable_worker() = identity_;
    internal::v1::RegisterResponse response;
    grpc::Status status = stub->Register(&context, request, &response);
    if (status.ok()) {
      TANDEM_LOG(INFO) << "event=registered router=" << router_address_ << " attempt=" << attempt;
      return;
    }
    TANDEM_LOG(WARNING) << "event=register_failed router=" << router_address_
                        << " attempt=" << attempt << " code=" << status.error_code()
                        << " error=\"" << status.error_message() << "\"";
    // full jitter over [backoff/2, backoff], doubling up to 5 s
    double jitter = 0.5 + 0.5 * std::uniform_real_distribution<double>(0, 1)(rng);
    std::unique_lock<std::mutex> lock(mu_);
    if (wake_.wait_for(lock, absl::ToChronoMilliseconds(backoff * jitter),
                       [this] { return stopping_; })) {
      return;
    }
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

}  // namespace tandem
