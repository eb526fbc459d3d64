#include "router/registry_service.h"

#include "common/logging.h"
#include "router/router_options.h"

namespace tandem::router {
namespace {

WorkerRole RoleHint(internal_v1::Role role) {
  switch (role) {
    case internal_v1::ROLE_PREFILL:
      return WorkerRole::kPrefill;
    case internal_v1::ROLE_COLOCATED:
      return WorkerRole::kColocated;
    default:
      return WorkerRole::kDecode;
  }
}

// Each report is applied as it arrives; the stream ending needs nothing (polls continue
// and a silent worker goes stale).
class ReportReader final : public grpc::ServerReadReactor<internal_v1::LoadReport> {
 public:
  explicit ReportReader(LoadPoller* poller) : poller_(poller) { StartRead(&report_); }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    const std::string& address = report_.worker().grpc_address();
    if (ValidateAddress("worker.grpc_address", address, 1).ok()) {
      poller_->AddTarget(address, RoleHint(report_.worker().role()));
      poller_->OnReport(report_, address, RoleHint(report_.worker().role()));
    }
    StartRead(&report_);
  }
  void OnDone() override { delete this; }

 private:
  LoadPoller* const poller_;
  internal_v1::LoadReport report_;
};

}  // namespace

grpc::ServerUnaryReactor* RegistryService::Register(grpc::CallbackServerContext* context,
                                                    const internal_v1::RegisterRequest* request,
                                                    internal_v1::RegisterResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::string& address = request->worker().grpc_address();
  if (absl::Status s = ValidateAddress("worker.grpc_address", address, 1); !s.ok()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message())));
    return reactor;
  }
  poller_->AddTarget(address, RoleHint(request->worker().role()));
  TANDEM_LOG(INFO) << "event=worker_registered worker=" << request->worker().name()
                   << " address=" << address;
  response->set_report_interval_ms(
      static_cast<int32_t>(absl::ToInt64Milliseconds(report_interval_)));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerReadReactor<internal_v1::LoadReport>* RegistryService::ReportLoad(
    grpc::CallbackServerContext*, internal_v1::ReportLoadResponse*) {
  return new ReportReader(poller_);
}

}  // namespace tandem::router
