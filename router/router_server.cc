#include "router/router_server.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/service/process_identity.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "router/router_request.h"

namespace tandem::router {
namespace {

constexpr char kHealthService[] = "tandem.v1.Tandem";

}  // namespace

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Start(RouterOptions options) {
  if (absl::Status s = ValidateRouterOptions(options); !s.ok()) return s;
  std::unique_ptr<RouterServer> server(new RouterServer());
  server->options_ = std::move(options);
  if (absl::Status s = server->Build(); !s.ok()) return s;
  return server;
}

absl::Status RouterServer::Build() {
  absl::StatusOr<std::unique_ptr<ModelContext>> model =
      ModelContext::Load(options_.model_dir, options_.kv_block_size_tokens);
  if (!model.ok()) return model.status();
  model_ = *std::move(model);
  registry_ = std::make_unique<WorkerRegistry>(
      RegistryOptions{.report_timeout = options_.report_timeout});
  prefill_policy_ = MakeRoutingPolicy(options_.prefill_policy);
  decode_policy_ = MakeRoutingPolicy(options_.decode_policy);
  timers_ = std::make_unique<TimerQueue>();
  admission_ = std::make_unique<Admission>(options_.max_inflight, options_.max_queue);
  ctx_ = RouterContext{&options_,           model_.get(),   registry_.get(),
                       prefill_policy_.get(), decode_policy_.get(), &clients_,
                       timers_.get(),       admission_.get(), &active_};
  poller_ = std::make_unique<LoadPoller>(
      LoadPollerOptions{options_.poll_interval, options_.poll_timeout}, registry_.get(),
      &clients_, [this](const std::string& name) { OnWorkerRestarted(name); },
      [this](bool serving) { OnHealth(serving); });
  for (const std::string& a : options_.prefill_addresses) poller_->AddTarget(a, WorkerRole::kPrefill);
  for (const std::string& a : options_.decode_addresses) poller_->AddTarget(a, WorkerRole::kDecode);
  service_ = std::make_unique<TandemService>(&ctx_);
  registry_service_ = std::make_unique<RegistryService>(poller_.get(), options_.poll_interval);
  if (absl::Status s = StartGrpc(); !s.ok()) return s;
  poller_->Start();
  if (options_.prefill_addresses.empty() && options_.decode_addresses.empty()) OnHealth(false);
  return absl::OkStatus();
}

// Tandem + Registry services, health (NOT_SERVING until workers are healthy), reflection.
absl::Status RouterServer::StartGrpc() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options_.listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(options_.max_receive_message_bytes);
  builder.RegisterService(service_.get());
  builder.RegisterService(registry_service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("--listen: cannot listen on ", options_.listen));
  }
  address_ = absl::StrCat(options_.listen.substr(0, options_.listen.rfind(':')), ":", port);
  server_->GetHealthCheckService()->SetServingStatus(kHealthService, false);
  TANDEM_LOG(INFO) << "event=listening address=" << address_ << " model=" << model_->name
                   << " prefill=" << options_.prefill_addresses.size()
                   << " decode=" << options_.decode_addresses.size();
  return absl::OkStatus();
}

// Health follows worker availability; the ready file is written the first time the router
// is SERVING (or at once when no static workers are configured: they will register).
void RouterServer::OnHealth(bool serving) {
  bool was = serving_.exchange(serving);
  if (was != serving) {
    if (!shut_down_.load()) server_->GetHealthCheckService()->SetServingStatus(kHealthService, serving);
    TANDEM_LOG(INFO) << "event=health service=" << kHealthService
                     << " serving=" << (serving ? "true" : "false");
  }
  bool no_static = options_.prefill_addresses.empty() && options_.decode_addresses.empty();
  if ((serving || no_static) && !options_.ready_file.empty() && !ready_written_.exchange(true)) {
    absl::Status s = WriteReadyFile(options_.ready_file, "router", address_, "");
    if (!s.ok()) TANDEM_LOG(ERROR) << "event=ready_file_failed error=\"" << s.message() << "\"";
  }
}

void RouterServer::OnWorkerRestarted(const std::string& name) {
  for (const std::shared_ptr<RouterRequest>& request : active_.Snapshot()) {
    request->OnWorkerLost(name);
  }
}

void RouterServer::Shutdown() {
  if (shut_down_.exchange(true)) return;
  TANDEM_LOG(INFO) << "event=draining inflight=" << active_.size();
  server_->GetHealthCheckService()->SetServingStatus(kHealthService, false);
  admission_->Close();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + options_.drain_timeout));
  server_->Wait();
  poller_->Stop();
  // Finished requests may still await a worker's late callback; they touch clients_.
  if (!active_.WaitNoneLive(absl::Seconds(5))) {
    TANDEM_LOG(WARNING) << "event=shutdown_wait_timeout what=worker_callbacks";
  }
  TANDEM_LOG(INFO) << "event=stopped";
}

RouterServer::~RouterServer() {
  if (server_ != nullptr) Shutdown();
}

}  // namespace tandem::router
