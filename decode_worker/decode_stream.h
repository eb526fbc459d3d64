// One Decode call: a server-streaming reactor fed by the engine's OutputSink. The engine
// thread queues DecodeEvents; the reactor keeps one write in flight and finishes the call
// once every output index finished (OK) or the request was aborted (its status).
//
// Lifetime: gRPC owns the reactor until OnDone, which deletes it. The engine owns the sink
// (StreamSink) as long as it holds the request; OnDone detaches the sink first, so a late
// output is dropped instead of touching a deleted reactor. Lock order: sink, then stream.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/engine/engine_types.h"
#include "decode_worker/decode_context.h"
#include "grpcpp/grpcpp.h"
#include "tandem/internal/v1/worker.pb.h"

namespace tandem {

class DecodeStream;

class StreamSink final : public OutputSink {
 public:
  explicit StreamSink(DecodeStream* stream) : stream_(stream) {}
  void OnOutput(EngineOutput output) override;
  void Detach();

 private:
  std::mutex mu_;
  DecodeStream* stream_;  // guarded by mu_; null once the call is done
};

class DecodeStream final : public grpc::ServerWriteReactor<internal::v1::DecodeEvent> {
 public:
  // `id`: the engine request id (reservation id, or request id when colocated).
  // `num_outputs`: output indices to finish (n, or num_return_sequences for beams).
  DecodeStream(DecodeContext& ctx, std::string id, int32_t num_outputs);

  const std::string& id() const { return id_; }
  std::shared_ptr<StreamSink> sink() const { return sink_; }
  // Ends the call at once with `status` (validation failures before anything started).
  void Reject(const absl::Status& status);
  // The call now owns table entry id(): cancelling it releases the entry, OnDone removes it.
  void OwnEntry() { owns_entry_ = true; }

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  friend class StreamSink;
  void Push(EngineOutput output);  // on the engine thread, via the sink
  void WriteNextLocked();          // requires mu_

  DecodeContext& ctx_;
  const std::string id_;
  const std::string worker_name_;
  const std::shared_ptr<StreamSink> sink_;
  std::atomic<bool> owns_entry_{false};
  std::mutex mu_;
  std::deque<internal::v1::DecodeEvent> queue_;  // guarded by mu_; front is being written
  bool writing_ = false;                         // guarded by mu_
  int32_t open_outputs_;                         // guarded by mu_
  std::optional<grpc::Status> finish_;           // guarded by mu_: finish after the queue
  bool finish_called_ = false;                   // guarded by mu_
};

}  // namespace tandem
