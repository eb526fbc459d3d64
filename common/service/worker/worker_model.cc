#include "common/service/worker/worker_model.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/backend/cuda/backend_select.h"
#include "common/status.h"
#include "common/tokenizer/tokenizer.h"
#include "kv_transfer/transport_select.h"

namespace tandem {
namespace {

// FNV-1a: stable across processes and builds (absl::Hash is salted per process).
uint64_t StableHash(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  }
  return hash;
}

absl::StatusOr<std::string> Fingerprint(const std::string& model_dir, const ModelConfig& config,
                                        const KvLayout& layout) {
  std::ifstream in(model_dir + "/config.json", std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", model_dir, "/config.json"));
  std::stringstream text;
  text << in.rdbuf();
  return absl::StrFormat("%s/%016x/%s", config.architecture, StableHash(text.str()),
                         layout.Describe());
}

}  // namespace

absl::StatusOr<WorkerModel> LoadWorkerModel(const WorkerOptions& options, EngineRole role) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                          Tokenizer::Load(options.model_dir));
  TANDEM_ASSIGN_OR_RETURN(BackendKind backend, ParseBackendKind(options.backend));
  TANDEM_ASSIGN_OR_RETURN(KvTransportKind transport,
                          ResolveKvTransport(options.kv_transport, backend == BackendKind::kCuda));
  TANDEM_ASSIGN_OR_RETURN(
      SelectedRunner selected,
      LoadSelectedRunner(options.model_dir,
                         {.backend = backend,
                          .device = options.device,
                          .gpu_memory_fraction = options.gpu_memory_fraction,
                          .num_kv_blocks = options.num_kv_blocks,
                          .block_size_tokens = options.block_size,
                          .num_threads = options.threads,
                          .max_num_tokens = options.max_num_batched_tokens,
                          .max_num_seqs = options.max_num_seqs,
                          // every worker role builds a transport over the view
                          .kv_view = transport == KvTransportKind::kNccl
                                         ? KvViewKind::kDevice
                                         : KvViewKind::kHost}));
  std::unique_ptr<ModelRunner> runner = std::move(selected.runner);
  WorkerModel model;
  model.kv_view = std::move(selected.kv_view);
  model.kv_transport = transport;
  TANDEM_ASSIGN_OR_RETURN(model.fingerprint,
                          Fingerprint(options.model_dir, runner->config(), runner->kv_layout()));
  TANDEM_ASSIGN_OR_RETURN(std::optional<bool> pipeline,
                          ParsePipelineSteps(options.pipeline_steps, "pipeline_steps"));
  EngineOptions engine_options{
      .role = role,
      .scheduler = {.max_num_seqs = options.max_num_seqs,
                    .max_num_batched_tokens = options.max_num_batched_tokens},
      .pipeline_steps = pipeline};
  model.engine = std::make_unique<Engine>(engine_options, std::move(runner),
                                          std::shared_ptr<const Tokenizer>(std::move(tokenizer)));
  return model;
}

}  // namespace tandem
