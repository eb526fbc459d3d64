// Server-side reactors of Tandem.GenerateStream and Tandem.Generate (gRPC callback API).
//
// GenerateStream: a per-stream write queue with one write in flight; the request's events
// are queued by RouterRequest (never blocking) and written in order; its final status is
// written after the queue drains. An error after the first event is also sent as an
// `error` event, then the RPC ends with that status. Generate collects completions and
// answers once. Client cancellation is handed to the request on the timer thread, so a
// reaction never waits on the request's lock.
#pragma once

#include <memory>

#include "grpcpp/grpcpp.h"
#include "router/router_context.h"
#include "tandem/v1/tandem.grpc.pb.h"

namespace tandem::router {

// Validates and starts a request for `context`; never blocks. The reactor returned owns
// itself and is deleted when gRPC is done with it.
grpc::ServerWriteReactor<v1::GenerateStreamResponse>* StartGenerateStream(
    RouterContext* ctx, grpc::CallbackServerContext* context, const v1::GenerateRequest* request);

grpc::ServerUnaryReactor* StartGenerate(RouterContext* ctx, grpc::CallbackServerContext* context,
                                        const v1::GenerateRequest* request,
                                        v1::GenerateResponse* response);

}  // namespace tandem::router
