#include "cli/generate.h"

#include <chrono>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_model_runner.h"
#include "common/sampling/sampler.h"
#include "common/sampling/selection.h"
#include "common/sampling/sequence_state.h"
#include "common/sampling/stop_checker.h"
#include "common/status.h"
#include "common/tokenizer/incremental_detokenizer.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

constexpr int64_t kBlockSizeTokens = 16;

double MillisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

// Runs one forward for `tokens` at `first_position` and returns the last row's logits.
absl::StatusOr<std::span<const float>> Step(ModelRunner& runner, std::span<const int32_t> tokens,
                                            int32_t first_position,
                                            std::span<const int32_t> block_table) {
  std::vector<int32_t> positions(tokens.size()), slots(tokens.size());
  std::iota(positions.begin(), positions.end(), first_position);
  for (size_t i = 0; i < tokens.size(); ++i) {
    slots[i] = block_table[positions[i] / kBlockSizeTokens] * kBlockSizeTokens +
               positions[i] % kBlockSizeTokens;
  }
  std::vector<int32_t> query_start = {0, static_cast<int32_t>(tokens.size())};
  std::vector<int32_t> rows = {static_cast<int32_t>(tokens.size()) - 1};
  ForwardInputs in{.token_ids = tokens, .positions = positions, .slot_mapping = slots,
                   .query_start = query_start, .block_tables = {block_table},
                   .logits_rows = rows};
  TANDEM_ASSIGN_OR_RETURN(LogitsView logits, runner.Forward(in));
  return logits.Row(0);
}

}  // namespace

absl::StatusOr<GenerateStats> Generate(const GenerateOptions& options, std::ostream& out) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                          Tokenizer::Load(options.model_dir));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                          tokenizer->Encode(options.prompt, /*add_special_tokens=*/true));
  if (prompt.empty()) return absl::InvalidArgumentError("prompt must not be empty");
  TANDEM_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
  TANDEM_RETURN_IF_ERROR(options.sampling.Validate(config.vocab_size));
  if (options.sampling.n > 1 || options.sampling.beam_search()) {
    return absl::InvalidArgumentError(
        "tandem generate runs one sequence: n and num_beams must be 1");
  }
  int64_t max_len = std::min<int64_t>(config.max_position_embeddings,
                                      prompt.size() + options.sampling.max_tokens);
  if (static_cast<int64_t>(prompt.size()) >= config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt has ", prompt.size(), " tokens; the model's context is ",
        config.max_position_embeddings));
  }
  int64_t num_blocks = (max_len + kBlockSizeTokens - 1) / kBlockSizeTokens;
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CpuModelRunner> runner,
                          CpuModelRunner::Load(options.model_dir,
                                               {.num_kv_blocks = num_blocks,
                                                .block_size_tokens = kBlockSizeTokens,
                                                .num_threads = options.num_threads}));
  std::vector<int32_t> block_table(num_blocks);
  std::iota(block_table.begin(), block_table.end(), 0);

  GenerateStats stats{.prompt_tokens = static_cast<int64_t>(prompt.size()),
                      .finish_reason = "length"};
  stats.seed = ResolveSeed(options.sampling);
  SequenceSamplingState state = MakeSequenceState(prompt, stats.seed);
  StopChecker stop(*tokenizer, options.sampling, config.eos_token_ids, prompt);
  SamplingContext context{.vocab_size = config.vocab_size, .eos_token_ids = config.eos_token_ids};
  SamplingRow row{.params = &options.sampling, .state = &state};
  auto start = std::chrono::steady_clock::now();
  TANDEM_ASSIGN_OR_RETURN(std::span<const float> logits, Step(*runner, prompt, 0, block_table));
  stats.prefill_ms = MillisSince(start);
  start = std::chrono::steady_clock::now();
  std::vector<float> row_logits;
  for (int64_t pos = prompt.size(); pos < max_len; ++pos) {
    row_logits.assign(logits.begin(), logits.end());
    int32_t token = SampleBatch(row_logits, context, std::span(&row, 1))[0].token_id;
    AppendToken(state, token);
    ++stats.generated_tokens;
    StopVerdict verdict = stop.Push(state, token);
    out << verdict.text << std::flush;
    if (verdict.finish) {
      stats.finish_reason = *verdict.finish == FinishReason::kStop ? "stop" : "length";
      break;
    }
    if (pos + 1 == max_len) {  // the model's context is full
      out << stop.EndForLength(state).text << std::flush;
      break;
    }
    TANDEM_ASSIGN_OR_RETURN(logits, Step(*runner, std::span(&token, 1), pos, block_table));
  }
  stats.decode_ms = MillisSince(start);
  return stats;
}

}  // namespace tandem::cli
