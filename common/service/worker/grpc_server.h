// Starts a worker's gRPC server: its service, the standard grpc.health.v1 service with the
// named service SERVING (call once weights are loaded), and server reflection.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace tandem {

class GrpcServer {
 public:
  // Binds `listen` (host:port, port 0 picks one) and starts serving `service`.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const std::string& listen,
                                                           grpc::Service* service,
                                                           const std::string& health_name);
  ~GrpcServer();  // Shutdown(now)

  // host:port actually bound.
  const std::string& address() const { return address_; }
  // Health of the named service (drain sets it NOT_SERVING).
  void SetServing(bool serving);
  // Stops accepting calls, cancels those still running at `deadline`, waits for them.
  // Idempotent.
  void Shutdown(absl::Time deadline);

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, std::string address, std::string health_name)
      : server_(std::move(server)),
        address_(std::move(address)),
        health_name_(std::move(health_name)) {}

  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::string health_name_;
  bool shut_down_ = false;
};

}  // namespace tandem
