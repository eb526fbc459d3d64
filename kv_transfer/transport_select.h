// Choosing a worker's KV transfer transport at start (`--kv_transport=auto|tcp|nccl`): the
// one place that knows which transports this build has. Always compiled; the NCCL transport
// is linked in when the build found CUDA and NCCL (TANDEM_WITH_NCCL_TRANSPORT).
//
// tcp:  KV as host bytes over a socket (CPU workers; CUDA workers through managed memory —
//       correct, not fast).
// nccl: KV as device bytes GPU to GPU (kv_transfer/nccl): needs --backend=cuda.
// auto: nccl for --backend=cuda when this build has it, else tcp.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kv_transfer/kv_transfer.h"

namespace tandem {

enum class KvTransportKind { kTcp, kNccl };

// Whether this build contains the NCCL transport.
bool NcclTransportCompiled();
std::string_view KvTransportName(KvTransportKind kind);

// Resolves --kv_transport for a worker whose runner is CUDA (`cuda_backend`) or CPU.
// INVALID_ARGUMENT names the flag (unknown name; nccl without --backend=cuda);
// UNIMPLEMENTED when nccl is asked for in a build without it.
absl::StatusOr<KvTransportKind> ResolveKvTransport(std::string_view name, bool cuda_backend);

// `cache` must be a host view for tcp and a kCudaDevice view for nccl.
absl::StatusOr<std::unique_ptr<KvSender>> MakeKvSender(KvTransportKind kind, KvCacheView cache,
                                                       KvPeerIdentity identity);

struct KvReceiverListen {
  std::string host = "127.0.0.1";
  int port = 0;  // 0 picks a free port
};

absl::StatusOr<std::unique_ptr<KvReceiver>> StartKvReceiver(KvTransportKind kind,
                                                            KvCacheView cache,
                                                            KvReceiverListen listen,
                                                            KvPeerIdentity identity);

}  // namespace tandem
