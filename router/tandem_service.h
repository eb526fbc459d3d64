// The public tandem.v1.Tandem service on gRPC's callback API. Reactions validate and hand
// off; none blocks. GenerateStream/Generate: router/generate_reactors.h.
#pragma once

#include "router/router_context.h"
#include "tandem/v1/tandem.grpc.pb.h"

namespace tandem::router {

class TandemService final : public v1::Tandem::CallbackService {
 public:
  explicit TandemService(RouterContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerateStream(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* context,
                                      const v1::ModelInfoRequest* request,
                                      v1::ModelInfoResponse* response) override;

 private:
  RouterContext* const ctx_;
};

// Fills `response` from the model and the registry's healthy workers (tests call it too).
void FillModelInfo(const RouterContext& ctx, v1::ModelInfoResponse* response);

}  // namespace tandem::router
