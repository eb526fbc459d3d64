// The router process minus flag parsing: loads the model, builds the registry, policies,
// poller and services, listens, and drains on Shutdown. Tests start one in-process.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "router/load_poller.h"
#include "router/registry_service.h"
#include "router/router_context.h"
#include "router/tandem_service.h"

namespace tandem::router {

class RouterServer {
 public:
  static absl::StatusOr<std::unique_ptr<RouterServer>> Start(RouterOptions options);
  ~RouterServer();  // Shutdown()

  // host:port actually bound (port 0 resolved).
  const std::string& address() const { return address_; }
  // Stops accepting, lets in-flight requests finish until drain_timeout (then cancels
  // them), stops the poller. Idempotent.
  void Shutdown();
  bool serving() const { return serving_.load(); }

 private:
  RouterServer() = default;
  absl::Status Build();
  absl::Status StartGrpc();
  void OnHealth(bool serving);
  void OnWorkerRestarted(const std::string& name);

  RouterOptions options_;
  std::unique_ptr<ModelContext> model_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<RoutingPolicy> prefill_policy_;
  std::unique_ptr<RoutingPolicy> decode_policy_;
  WorkerClients clients_;
  std::unique_ptr<TimerQueue> timers_;
  std::unique_ptr<Admission> admission_;
  ActiveRequests active_;
  RouterContext ctx_;
  std::unique_ptr<LoadPoller> poller_;
  std::unique_ptr<TandemService> service_;
  std::unique_ptr<RegistryService> registry_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::atomic<bool> serving_{false};
  std::atomic<bool> ready_written_{false};
  std::atomic<bool> shut_down_{false};
};

}  // namespace tandem::router
