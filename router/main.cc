// tandem-router: the public gRPC endpoint of a tandem cluster (docs/router.md).
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/logging.h"
#include "common/service/process_identity.h"
#include "router/router_server.h"

ABSL_FLAG(std::string, model, TANDEM_DEFAULT_MODEL_DIR,
          "model directory: tokenizer.json + config.json (default: the embedded model)");
ABSL_FLAG(std::string, listen, "127.0.0.1:8000", "host:port to serve on (port 0: any free)");
ABSL_FLAG(std::string, ready_file, "", "write {\"grpc\": address, ...} here once SERVING");
ABSL_FLAG(std::string, prefill, "", "static prefill workers, comma-separated host:port");
ABSL_FLAG(std::string, decode, "", "static decode (or colocated) workers, host:port,...");
ABSL_FLAG(std::string, prefill_policy, "prefix_affinity",
          "round_robin | least_load | prefix_affinity");
ABSL_FLAG(std::string, decode_policy, "least_load", "round_robin | least_load | prefix_affinity");
ABSL_FLAG(int32_t, max_inflight, 256, "requests running at once, >= 1");
ABSL_FLAG(int32_t, max_queue, 1024, "requests waiting for a slot, >= 0 (beyond: RESOURCE_EXHAUSTED)");
ABSL_FLAG(int32_t, max_attempts, 3, "worker attempts per request without progress, in [1, 100]");
ABSL_FLAG(absl::Duration, request_timeout, absl::Minutes(5),
          "deadline of requests whose client sets none (and the cap on any deadline)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "SIGTERM: how long in-flight requests may take to finish");
ABSL_FLAG(int32_t, kv_block_size_tokens, 16, "the workers' KV block size: 16, 32 or 64");

namespace tandem::router {
namespace {

absl::StatusOr<RouterOptions> OptionsFromFlags() {
  RouterOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model);
  o.listen = absl::GetFlag(FLAGS_listen);
  o.ready_file = absl::GetFlag(FLAGS_ready_file);
  absl::StatusOr<std::vector<std::string>> prefill =
      ParseAddressList("--prefill", absl::GetFlag(FLAGS_prefill));
  if (!prefill.ok()) return prefill.status();
  o.prefill_addresses = *std::move(prefill);
  absl::StatusOr<std::vector<std::string>> decode =
      ParseAddressList("--decode", absl::GetFlag(FLAGS_decode));
  if (!decode.ok()) return decode.status();
  o.decode_addresses = *std::move(decode);
  absl::StatusOr<PolicyKind> pp = ParsePolicyKind(absl::GetFlag(FLAGS_prefill_policy));
  if (!pp.ok()) return absl::InvalidArgumentError("--prefill_policy: " + std::string(pp.status().message()));
  o.prefill_policy = *pp;
  absl::StatusOr<PolicyKind> dp = ParsePolicyKind(absl::GetFlag(FLAGS_decode_policy));
  if (!dp.ok()) return absl::InvalidArgumentError("--decode_policy: " + std::string(dp.status().message()));
  o.decode_policy = *dp;
  o.max_inflight = absl::GetFlag(FLAGS_max_inflight);
  o.max_queue = absl::GetFlag(FLAGS_max_queue);
  o.retry.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  o.request_timeout = absl::GetFlag(FLAGS_request_timeout);
  o.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  o.kv_block_size_tokens = absl::GetFlag(FLAGS_kv_block_size_tokens);
  if (absl::Status s = ValidateRouterOptions(o); !s.ok()) return s;
  return o;
}

int Run() {
  absl::StatusOr<RouterOptions> options = OptionsFromFlags();
  if (!options.ok()) {
    std::fprintf(stderr, "tandem-router: %s\n", std::string(options.status().message()).c_str());
    return 2;
  }
  InstallShutdownSignalHandlers();
  absl::StatusOr<std::unique_ptr<RouterServer>> server = RouterServer::Start(*std::move(options));
  if (!server.ok()) {
    std::fprintf(stderr, "tandem-router: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  while (!WaitForShutdown(absl::Seconds(1))) {
  }
  TANDEM_LOG(INFO) << "event=signal action=drain";
  (*server)->Shutdown();
  return 0;
}

}  // namespace
}  // namespace tandem::router

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("tandem-router --prefill=HOST:PORT,... --decode=HOST:PORT,...");
  absl::ParseCommandLine(argc, argv);
  return tandem::router::Run();
}
