#include "common/service/worker/worker_flags.h"

#include <string>

#include "absl/flags/flag.h"

#ifndef TANDEM_DEFAULT_MODEL_DIR
#error "TANDEM_DEFAULT_MODEL_DIR must be defined by the build"
#endif

ABSL_FLAG(std::string, model, TANDEM_DEFAULT_MODEL_DIR,
          "Hugging Face model directory (default: the embedded fixture model)");
ABSL_FLAG(std::string, listen, "127.0.0.1:0", "gRPC host:port; port 0 picks a free port");
ABSL_FLAG(std::string, name, "", "worker name, unique in the cluster (default: role@address)");
ABSL_FLAG(std::string, ready_file, "",
          "write {grpc, kv, name, incarnation} as JSON here once serving");
ABSL_FLAG(std::string, backend, "cpu", "model runner: cpu or cuda");
ABSL_FLAG(int32_t, device, 0, "--backend=cuda: CUDA device ordinal");
ABSL_FLAG(std::string, kv_transport, "auto",
          "KV transfer between workers: tcp (host bytes over a socket), nccl (GPU to GPU; "
          "needs --backend=cuda), or auto (nccl with --backend=cuda when built, else tcp)");
ABSL_FLAG(double, gpu_memory_fraction, 0.9,
          "--backend=cuda: share of the device's memory the runner may fill (weights, "
          "activations, KV pool) when --num_kv_blocks=0");
ABSL_FLAG(int64_t, num_kv_blocks, 2048,
          "KV cache size in blocks (--backend=cuda: 0 sizes it from --gpu_memory_fraction)");
ABSL_FLAG(int64_t, block_size, 16, "tokens per KV block: 16, 32 or 64");
ABSL_FLAG(int32_t, threads, 1, "CPU compute threads of the model runner");
ABSL_FLAG(int32_t, max_num_seqs, 64, "most sequences in one engine step");
ABSL_FLAG(int64_t, max_num_batched_tokens, 512,
          "most tokens in one engine step (longer prompts are chunked)");
ABSL_FLAG(bool, kv_overlap, true,
          "prefill workers: stream a prompt's KV to its decode worker while the forward pass "
          "of its last chunk writes it (false: send it after the first token)");
ABSL_FLAG(std::string, pipeline_steps, "auto",
          "decode steps: on launches step N+1's forward pass, its tokens fed on the device, "
          "before step N's tokens reach the host; off waits; auto lets the runner decide");
ABSL_FLAG(std::string, router, "",
          "router host:port to Register with (optional: the router can also poll GetLoad)");

namespace tandem {

WorkerOptions WorkerOptionsFromFlags() {
  return {.model_dir = absl::GetFlag(FLAGS_model),
          .listen = absl::GetFlag(FLAGS_listen),
          .name = absl::GetFlag(FLAGS_name),
          .ready_file = absl::GetFlag(FLAGS_ready_file),
          .backend = absl::GetFlag(FLAGS_backend),
          .device = absl::GetFlag(FLAGS_device),
          .kv_transport = absl::GetFlag(FLAGS_kv_transport),
          .gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction),
          .num_kv_blocks = absl::GetFlag(FLAGS_num_kv_blocks),
          .block_size = absl::GetFlag(FLAGS_block_size),
          .threads = absl::GetFlag(FLAGS_threads),
          .max_num_seqs = absl::GetFlag(FLAGS_max_num_seqs),
          .max_num_batched_tokens = absl::GetFlag(FLAGS_max_num_batched_tokens),
          .kv_overlap = absl::GetFlag(FLAGS_kv_overlap),
          .pipeline_steps = absl::GetFlag(FLAGS_pipeline_steps),
          .router = absl::GetFlag(FLAGS_router)};
}

}  // namespace tandem
