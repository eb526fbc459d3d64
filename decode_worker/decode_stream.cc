#include "decode_worker/decode_stream.h"

#include "common/api/api_convert.h"
#include "common/logging.h"
#include "common/service/worker/rpc_util.h"

namespace tandem {

void StreamSink::OnOutput(EngineOutput output) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stream_ != nullptr) stream_->Push(std::move(output));
}

void StreamSink::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  stream_ = nullptr;
}

DecodeStream::DecodeStream(DecodeContext& ctx, std::string id, int32_t num_outputs)
    : ctx_(ctx),
      id_(std::move(id)),
      worker_name_(ctx.identity().name()),
      sink_(std::make_shared<StreamSink>(this)),
      open_outputs_(num_outputs) {}

void DecodeStream::Reject(const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  finish_ = ToGrpcStatus(status);
  WriteNextLocked();
}

void DecodeStream::Push(EngineOutput o) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finish_) return;  // already ending: late outputs are dropped
  if (o.finish == OutputFinish::kAbort) {
    finish_ = o.status.ok() ? grpc::Status(grpc::StatusCode::CANCELLED, "request aborted")
                            : ToGrpcStatus(o.status);
  } else {
    if (!o.token_ids.empty() || !o.text.empty()) {
      OutputToDelta(o, queue_.emplace_back().mutable_delta());
    }
    if (o.finish != OutputFinish::kNone) {
      internal::v1::DecodeEvent& event = queue_.emplace_back();
      OutputToFinished(o, event.mutable_finished());
      event.mutable_finished()->mutable_served_by()->set_decode_worker(worker_name_);
      if (--open_outputs_ == 0) finish_ = grpc::Status::OK;
    }
  }
  WriteNextLocked();
}

void DecodeStream::WriteNextLocked() {
  if (writing_ || finish_called_) return;
  if (!queue_.empty()) {
    writing_ = true;
    StartWrite(&queue_.front());  // deque: the element stays put while others are appended
    return;
  }
  if (finish_) {
    finish_called_ = true;
    Finish(*finish_);
  }
}

void DecodeStream::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writing_ = false;
  queue_.pop_front();
  if (!ok) {  // the client is gone: OnCancel frees the request
    queue_.clear();
    if (!finish_) finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "stream write failed");
  }
  WriteNextLocked();
}

void DecodeStream::OnCancel() {
  if (owns_entry_) {
    TANDEM_LOG(INFO) << "event=decode_cancelled id=" << id_;
    ctx_.Release(id_, absl::CancelledError("Decode call cancelled by the client"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  queue_.erase(queue_.begin() + (writing_ ? 1 : 0), queue_.end());
  if (!finish_) finish_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  WriteNextLocked();
}

void DecodeStream::OnDone() {
  sink_->Detach();
  if (owns_entry_) ctx_.table.Remove(id_);
  delete this;
}

}  // namespace tandem
