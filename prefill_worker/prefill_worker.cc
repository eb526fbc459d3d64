#include "prefill_worker/prefill_worker.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/service/process_identity.h"
#include "common/status.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<PrefillWorker>> PrefillWorker::Start(const WorkerOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(WorkerModel model, LoadWorkerModel(options, EngineRole::kPrefillOnly));
  auto worker = std::unique_ptr<PrefillWorker>(new PrefillWorker(std::move(model)));
  TANDEM_RETURN_IF_ERROR(worker->Init(options));
  return worker;
}

absl::Status PrefillWorker::Init(const WorkerOptions& options) {
  identity_.set_incarnation(ProcessIncarnation());
  identity_.set_role(internal::v1::ROLE_PREFILL);
  identity_.set_model_fingerprint(model_.fingerprint);
  identity_.set_name(options.name);
  TANDEM_ASSIGN_OR_RETURN(sender_,
                          MakeKvSender(model_.kv_transport, model_.kv_view,
                                       {.name = options.name,
                                        .incarnation = identity_.incarnation(),
                                        .model_fingerprint = model_.fingerprint}));
  TANDEM_LOG(INFO) << "event=kv_transport kind=" << KvTransportName(model_.kv_transport);
  poller_ = std::make_unique<TransferPoller>(*sender_);
  model_.engine->Start();
  ctx_ = std::make_unique<PrefillContext>(*model_.engine, *sender_, *poller_,
                                          options.kv_overlap);
  ctx_->set_identity(identity_);
  service_ = std::make_unique<PrefillService>(*ctx_);
  TANDEM_ASSIGN_OR_RETURN(server_,
                          GrpcServer::Start(options.listen, service_.get(), kPrefillHealthService));
  identity_.set_grpc_address(server_->address());
  if (options.name.empty()) identity_.set_name(absl::StrCat("prefill@", server_->address()));
  ctx_->set_identity(identity_);
  return absl::OkStatus();
}

PrefillWorker::~PrefillWorker() { Shutdown(); }

void PrefillWorker::Drain(absl::Time deadline) {
  ctx_->draining = true;
  server_->SetServing(false);
  while (ctx_->num_calls() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  TANDEM_LOG(INFO) << "event=drained left=" << ctx_->num_calls();
}

void PrefillWorker::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (ctx_) ctx_->draining = true;
  // Calls still running are cancelled after a short grace; cancelling stops their
  // transfers, and the server waits until every call finished.
  if (server_) server_->Shutdown(absl::Now() + absl::Seconds(1));
  if (poller_) poller_->Stop();
  sender_.reset();  // stops reading the engine's KV memory
  if (model_.engine) model_.engine->Stop();
}

}  // namespace tandem
