#include "router/generate_reactors.h"

#include <deque>
#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "router/request_validation.h"
#include "router/router_request.h"

namespace tandem::router {
namespace {

uint64_t RandomSeed() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// Validates, resolves the deadline and creates the request (not started yet).
absl::StatusOr<std::shared_ptr<RouterRequest>> MakeRequest(RouterContext* ctx,
                                                           grpc::CallbackServerContext* context,
                                                           const v1::GenerateRequest& proto,
                                                           RequestObserver* observer) {
  absl::Time arrival = absl::Now();
  uint64_t serial = ctx->active->NextSerial();
  absl::StatusOr<PreparedRequest> prepared =
      PrepareRequest(proto, *ctx->model, absl::StrCat("req-", serial), RandomSeed());
  if (!prepared.ok()) return prepared.status();
  absl::Time deadline = std::min(absl::FromChrono(context->deadline()),
                                 arrival + ctx->options->request_timeout);
  return std::make_shared<RouterRequest>(ctx, *std::move(prepared), arrival, deadline, serial,
                                         observer);
}

// Runs `request->Cancel()` off the reaction's thread.
void CancelLater(RouterContext* ctx, const std::shared_ptr<RouterRequest>& request) {
  if (request == nullptr) return;
  ctx->timers->Schedule(absl::Now(), [request] { request->Cancel(); });
}

class StreamReactor final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse>,
                            public RequestObserver {
 public:
  StreamReactor(RouterContext* ctx, grpc::CallbackServerContext* context,
                const v1::GenerateRequest& proto)
      : ctx_(ctx) {
    absl::StatusOr<std::shared_ptr<RouterRequest>> request =
        MakeRequest(ctx, context, proto, this);
    if (!request.ok()) {
      Finish(ToGrpc(request.status()));
      return;
    }
    request_ = *std::move(request);
    request_->Start();
  }

  void OnEvent(v1::GenerateStreamResponse event) override {
    std::unique_lock<std::mutex> lock(mu_);
    request_id_ = event.request_id();
    queue_.push_back(std::move(event));
    started_ = true;
    MaybeWriteLocked(lock);
  }

  void OnComplete(const grpc::Status& status) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!status.ok() && started_) {
      v1::GenerateStreamResponse error;
      error.set_request_id(request_id_);
      error.mutable_error()->set_code(status.error_code());
      error.mutable_error()->set_message(status.error_message());
      queue_.push_back(std::move(error));
    }
    final_ = status;
    done_ = true;
    MaybeWriteLocked(lock);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    queue_.pop_front();
    if (!ok) queue_.clear();  // the client is gone; OnCancel follows
    MaybeWriteLocked(lock);
  }

  void OnCancel() override { CancelLater(ctx_, request_); }
  void OnDone() override { delete this; }

 private:
  // Starts the next write, or finishes once the queue drained after OnComplete.
  void MaybeWriteLocked(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      writing_ = true;
      const v1::GenerateStreamResponse* next = &queue_.front();  // stable in a deque
      lock.unlock();
      StartWrite(next);
      return;
    }
    if (!done_) return;
    finished_ = true;
    lock.unlock();
    Finish(final_);
  }

  RouterContext* const ctx_;
  std::shared_ptr<RouterRequest> request_;  // set once in the constructor
  std::string request_id_;
  std::mutex mu_;
  std::deque<v1::GenerateStreamResponse> queue_;  // front is being written when writing_
  bool writing_ = false;
  bool started_ = false;
  bool done_ = false;
  bool finished_ = false;
  grpc::Status final_;
};

// Collects the outputs of a unary Generate into its response.
class UnaryReactor final : public grpc::ServerUnaryReactor, public RequestObserver {
 public:
  UnaryReactor(RouterContext* ctx, grpc::CallbackServerContext* context,
               const v1::GenerateRequest& proto, v1::GenerateResponse* response)
      : ctx_(ctx), response_(response) {
    absl::StatusOr<std::shared_ptr<RouterRequest>> request =
        MakeRequest(ctx, context, proto, this);
    if (!request.ok()) {
      Finish(ToGrpc(request.status()));
      return;
    }
    request_ = *std::move(request);
    request_->Start();
  }

  void OnEvent(v1::GenerateStreamResponse event) override {
    std::lock_guard<std::mutex> lock(mu_);
    response_->set_request_id(event.request_id());
    if (event.has_delta()) AddDelta(event.delta());
    if (event.has_finished()) AddFinished(event.finished());
  }

  void OnComplete(const grpc::Status& status) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!status.ok()) response_->Clear();
    }
    Finish(status);
  }

  void OnCancel() override { CancelLater(ctx_, request_); }
  void OnDone() override { delete this; }

 private:
  v1::Completion* CompletionFor(int32_t index) {
    while (response_->completions_size() <= index) {
      response_->add_completions()->set_index(response_->completions_size() - 1);
    }
    return response_->mutable_completions(index);
  }

  void AddDelta(const v1::Delta& d) {
    v1::Completion* c = CompletionFor(d.index());
    c->mutable_token_ids()->Add(d.token_ids().begin(), d.token_ids().end());
    c->mutable_text()->append(d.text());
    for (const v1::TokenLogprob& l : d.logprobs()) *c->add_logprobs() = l;
  }

  void AddFinished(const v1::Finished& f) {
    v1::Completion* c = CompletionFor(f.index());
    c->set_finish_reason(f.finish_reason());
    c->set_stop(f.stop());
    c->set_score(f.score());
    if (f.has_usage()) *response_->mutable_usage() = f.usage();
    *response_->mutable_timings() = f.timings();
    *response_->mutable_served_by() = f.served_by();
    response_->set_seed(f.seed());
  }

  RouterContext* const ctx_;
  v1::GenerateResponse* const response_;
  std::shared_ptr<RouterRequest> request_;
  std::mutex mu_;
};

}  // namespace

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* StartGenerateStream(
    RouterContext* ctx, grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new StreamReactor(ctx, context, *request);
}

grpc::ServerUnaryReactor* StartGenerate(RouterContext* ctx, grpc::CallbackServerContext* context,
                                        const v1::GenerateRequest* request,
                                        v1::GenerateResponse* response) {
  return new UnaryReactor(ctx, context, *request, response);
}

}  // namespace tandem::router
