// tandem.internal.v1.Registry served by the router: workers started with --router=ADDR
// register (their address joins the GetLoad poll) and may stream load reports.
#pragma once

#include "router/load_poller.h"
#include "tandem/internal/v1/worker.grpc.pb.h"

namespace tandem::router {

class RegistryService final : public internal_v1::Registry::CallbackService {
 public:
  RegistryService(LoadPoller* poller, absl::Duration report_interval)
      : poller_(poller), report_interval_(report_interval) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const internal_v1::RegisterRequest* request,
                                     internal_v1::RegisterResponse* response) override;
  grpc::ServerReadReactor<internal_v1::LoadReport>* ReportLoad(
      grpc::CallbackServerContext* context, internal_v1::ReportLoadResponse* response) override;

 private:
  LoadPoller* const poller_;
  const absl::Duration report_interval_;
};

}  // namespace tandem::router
