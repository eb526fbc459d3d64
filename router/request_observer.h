// Where a request's outputs go: the GenerateStream reactor (writes them) or the Generate
// collector (gathers them). Called by RouterRequest under its lock, in order; never blocks.
#pragma once

#include "grpcpp/support/status.h"
#include "tandem/v1/tandem.pb.h"

namespace tandem::router {

class RequestObserver {
 public:
  virtual ~RequestObserver() = default;
  // A delta or a finished event (request_id set).
  virtual void OnEvent(v1::GenerateStreamResponse event) = 0;
  // The final status; the last call the observer receives.
  virtual void OnComplete(const grpc::Status& status) = 0;
};

}  // namespace tandem::router
