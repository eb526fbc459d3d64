#include "kv_transfer/transport_select.h"

#include "absl/strings/str_cat.h"
#include "kv_transfer/tcp/tcp_kv_receiver.h"
#include "kv_transfer/tcp/tcp_kv_sender.h"

#if TANDEM_WITH_NCCL_TRANSPORT
#include "kv_transfer/nccl/nccl_kv_receiver.h"
#include "kv_transfer/nccl/nccl_kv_sender.h"
#endif

namespace tandem {

bool NcclTransportCompiled() { return TANDEM_WITH_NCCL_TRANSPORT != 0; }

std::string_view KvTransportName(KvTransportKind kind) {
  return kind == KvTransportKind::kNccl ? "nccl" : "tcp";
}

absl::StatusOr<KvTransportKind> ResolveKvTransport(std::string_view name, bool cuda_backend) {
  if (name == "auto") {
    return cuda_backend && NcclTransportCompiled() ? KvTransportKind::kNccl : KvTransportKind::kTcp;
  }
  if (name == "tcp") return KvTransportKind::kTcp;
  if (name == "nccl") {
    if (!cuda_backend) {
      return absl::InvalidArgumentError(
          "--kv_transport=nccl moves KV between GPUs: it needs --backend=cuda");
    }
    if (!NcclTransportCompiled()) {
      return absl::UnimplementedError(
          "--kv_transport=nccl: this build has no NCCL transport (built without CUDA or NCCL)");
    }
    return KvTransportKind::kNccl;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--kv_transport must be auto, tcp or nccl, got \"", std::string(name), "\""));
}

absl::StatusOr<std::unique_ptr<KvSender>> MakeKvSender(KvTransportKind kind, KvCacheView cache,
                                                       KvPeerIdentity identity) {
  if (kind == KvTransportKind::kTcp) {
    if (cache.memory != KvMemory::kHost) {
      return absl::FailedPreconditionError("the TCP KV transport needs a host view of the cache");
    }
    return std::unique_ptr<KvSender>(
        new TcpKvSender(std::move(cache), TcpKvSenderOptions{.identity = std::move(identity)}));
  }
#if TANDEM_WITH_NCCL_TRANSPORT
  auto sender = NcclKvSender::Create(std::move(cache),
                                     NcclKvSenderOptions{.identity = std::move(identity)});
  if (!sender.ok()) return sender.status();
  return std::unique_ptr<KvSender>(std::move(*sender));
#else
  return absl::UnimplementedError("this build has no NCCL transport");
#endif
}

absl::StatusOr<std::unique_ptr<KvReceiver>> StartKvReceiver(KvTransportKind kind,
                                                            KvCacheView cache,
                                                            KvReceiverListen listen,
                                                            KvPeerIdentity identity) {
  if (kind == KvTransportKind::kTcp) {
    if (cache.memory != KvMemory::kHost) {
      return absl::FailedPreconditionError("the TCP KV transport needs a host view of the cache");
    }
    auto receiver = TcpKvReceiver::Start(
        std::move(cache), TcpKvReceiverOptions{.listen_host = listen.host,
                                               .port = listen.port,
                                               .identity = std::move(identity)});
    if (!receiver.ok()) return receiver.status();
    return std::unique_ptr<KvReceiver>(std::move(*receiver));
  }
#if TANDEM_WITH_NCCL_TRANSPORT
  auto receiver = NcclKvReceiver::Start(
      std::move(cache), NcclKvReceiverOptions{.listen_host = listen.host,
                                              .port = listen.port,
                                              .identity = std::move(identity)});
  if (!receiver.ok()) return receiver.status();
  return std::unique_ptr<KvReceiver>(std::move(*receiver));
#else
  return absl::UnimplementedError("this build has no NCCL transport");
#endif
}

}  // namespace tandem
