#include "cli/generate.h"

#include <chrono>
#include <map>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/backend_select.h"
#include "common/engine/engine.h"
#include "common/engine/output_queue.h"
#include "common/sampling/selection.h"
#include "common/status.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

constexpr int64_t kBlockSizeTokens = 16;

std::string FinishName(OutputFinish finish) {
  switch (finish) {
    case OutputFinish::kNone:
      return "none";
    case OutputFinish::kStop:
      return "stop";
    case OutputFinish::kLength:
      return "length";
    case OutputFinish::kAbort:
      return "abort";
  }
  return "?";
}

}  // namespace

absl::StatusOr<GenerateStats> Generate(const GenerateOptions& options, std::ostream& out) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> loaded, Tokenizer::Load(options.model_dir));
  std::shared_ptr<const Tokenizer> tokenizer = std::move(loaded);
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                          tokenizer->Encode(options.prompt, /*add_special_tokens=*/true));
  TANDEM_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  TANDEM_RETURN_IF_ERROR(options.sampling.Validate(config.vocab_size));
  // Enough KV for this request: prompt + max_tokens, times n or num_beams.
  int64_t longest = std::min<int64_t>(config.max_position_embeddings,
                                      prompt.size() + options.sampling.max_tokens);
  int64_t fan_out = std::max(options.sampling.n, options.sampling.num_beams);
  int64_t num_blocks = fan_out * ((longest + kBlockSizeTokens - 1) / kBlockSizeTokens) + 1;
  TANDEM_ASSIGN_OR_RETURN(BackendKind backend, ParseBackendKind(options.backend));
  const EngineOptions engine_options{.role = EngineRole::kColocated,
                                     .pipeline_steps = options.pipeline_steps};
  TANDEM_ASSIGN_OR_RETURN(
      SelectedRunner selected,
      LoadSelectedRunner(options.model_dir,
                         {.backend = backend,
                          .device = options.device,
                          .num_kv_blocks = num_blocks,
                          .block_size_tokens = kBlockSizeTokens,
                          .num_threads = options.num_threads,
                          .max_num_tokens = engine_options.scheduler.max_num_batched_tokens,
                          .max_num_seqs = engine_options.scheduler.max_num_seqs}));
  Engine engine(engine_options, std::move(selected.runner), tokenizer);
  engine.Start();
  auto queue = std::make_shared<OutputQueue>();
  EngineRequest request{.request_id = "generate", .prompt_ids = prompt,
                        .params = options.sampling,
                        .seed = options.sampling.seed.value_or(ResolveSeed(options.sampling)),
                        .sink = queue};
  TANDEM_RETURN_IF_ERROR(engine.AddRequest(request));
  GenerateStats stats{.prompt_tokens = static_cast<int64_t>(prompt.size()), .seed = request.seed};
  auto start = std::chrono::steady_clock::now();
  int32_t open_outputs = static_cast<int32_t>(
      options.sampling.beam_search() ? options.sampling.num_return_sequences : options.sampling.n);
  const bool stream = open_outputs == 1;  // n > 1 and beams print each output at the end
  std::map<int32_t, std::string> texts;
  while (open_outputs > 0) {
    std::optional<EngineOutput> o = queue->Pop(absl::Now() + absl::Minutes(10));
    if (!o) return absl::DeadlineExceededError("generation produced nothing for 10 minutes");
    if (o->finish == OutputFinish::kAbort) return o->status;
    if (stream) out << o->text << std::flush;
    texts[o->index] += o->text;
    stats.generated_tokens += static_cast<int64_t>(o->token_ids.size());
    if (o->finish != OutputFinish::kNone) {
      --open_outputs;
      stats.finish_reason = FinishName(o->finish);
      stats.prefill_ms = absl::ToDoubleMilliseconds(o->first_token_time);
    }
  }
  for (auto& [index, text] : texts) {
    if (!stream) out << (index > 0 ? "\n--- output " : "--- output ") << index << "\n" << text;
  }
  double total_ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - start).count();
  stats.decode_ms = total_ms - stats.prefill_ms;
  engine.Stop();
  return stats;
}

}  // namespace tandem::cli
