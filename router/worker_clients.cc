#include "router/worker_clients.h"

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace tandem::router {

WorkerStubs& WorkerClients::Get(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  std::unique_ptr<WorkerStubs>& slot = stubs_[address];
  if (slot == nullptr) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);  // workers are trusted peers
    // A restarted worker is reachable again within ~0.5 s, not gRPC's default 1-120 s.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
    // Separate channels per address even when a test reuses an address after a restart.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    slot = std::make_unique<WorkerStubs>();
    slot->channel =
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    slot->decode = internal_v1::DecodeWorker::NewStub(slot->channel);
    slot->prefill = internal_v1::PrefillWorker::NewStub(slot->channel);
  }
  return *slot;
}

}  // namespace tandem::router
