#include "decode_worker/decode_worker.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/service/process_identity.h"
#include "common/status.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<DecodeWorker>> DecodeWorker::Start(const WorkerOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(WorkerModel model, LoadWorkerModel(options, EngineRole::kDecodeOnly));
  auto worker = std::unique_ptr<DecodeWorker>(new DecodeWorker(std::move(model)));
  TANDEM_RETURN_IF_ERROR(worker->Init(options));
  return worker;
}

absl::Status DecodeWorker::Init(const WorkerOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(HostPort kv_listen, ParseHostPort(options.kv_listen, "kv_listen"));
  identity_.set_incarnation(ProcessIncarnation());
  identity_.set_role(internal::v1::ROLE_DECODE);
  identity_.set_model_fingerprint(model_.fingerprint);
  TANDEM_ASSIGN_OR_RETURN(
      receiver_, StartKvReceiver(model_.kv_transport, model_.kv_view,
                                 {.host = kv_listen.host, .port = kv_listen.port},
                                 {.name = options.name,
                                  .incarnation = identity_.incarnation(),
                                  .model_fingerprint = model_.fingerprint}));
  TANDEM_LOG(INFO) << "event=kv_transport kind=" << KvTransportName(model_.kv_transport);
  model_.engine->Start();
  ctx_ = std::make_unique<DecodeContext>(*model_.engine, *receiver_, table_);
  ctx_->set_identity(identity_);
  service_ = std::make_unique<DecodeService>(*ctx_);
  poller_ = std::make_unique<KvArrivalPoller>(*ctx_);
  TANDEM_ASSIGN_OR_RETURN(server_,
                          GrpcServer::Start(options.listen, service_.get(), kDecodeHealthService));
  identity_.set_grpc_address(server_->address());
  identity_.set_name(options.name.empty() ? absl::StrCat("decode@", server_->address())
                                          : options.name);
  ctx_->set_identity(identity_);
  return absl::OkStatus();
}

DecodeWorker::~DecodeWorker() { Shutdown(); }

void DecodeWorker::Drain(absl::Time deadline) {
  ctx_->draining = true;
  server_->SetServing(false);
  while (table_.size() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  TANDEM_LOG(INFO) << "event=drained left=" << table_.size();
}

void DecodeWorker::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (ctx_) ctx_->draining = true;
  // Calls still running are cancelled after a short grace; their reactions free them.
  if (server_) server_->Shutdown(absl::Now() + absl::Seconds(1));
  if (poller_) poller_->Stop();
  receiver_.reset();  // stops writing into the engine's KV memory
  if (model_.engine) model_.engine->Stop();
}

}  // namespace tandem
