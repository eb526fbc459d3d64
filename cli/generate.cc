#include "cli/generate.h"

#include <chrono>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_model_runner.h"
#include "common/sampling/sampler.h"
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

bool IsEos(const ModelConfig& config, int32_t token) {
  return std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), token) !=
         config.eos_token_ids.end();
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
  TANDEM_RETURN_IF_ERROR(options.sampling.Validate());
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                          Tokenizer::Load(options.model_dir));
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                          tokenizer->Encode(options.prompt, /*add_special_tokens=*/true));
  if (prompt.empty()) return absl::InvalidArgumentError("prompt must not be empty");
  TANDEM_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(options.model_dir));
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
  stats.seed = options.sampling.seed.value_or(std::random_device{}());
  IncrementalDetokenizer detokenizer(*tokenizer, prompt, {.skip_special_tokens = true});
  std::vector<std::pair<float, int32_t>> scratch;
  auto start = std::chrono::steady_clock::now();
  TANDEM_ASSIGN_OR_RETURN(std::span<const float> logits, Step(*runner, prompt, 0, block_table));
  stats.prefill_ms = MillisSince(start);
  start = std::chrono::steady_clock::now();
  for (int64_t pos = prompt.size(); pos < max_len; ++pos) {
    int32_t token = SampleToken(logits, options.sampling, stats.seed, pos, scratch);
    ++stats.generated_tokens;
    if (IsEos(config, token) && !options.sampling.ignore_eos) {
      stats.finish_reason = "stop";
      break;
    }
    out << detokenizer.Push(token) << std::flush;
    if (pos + 1 == max_len) break;
    TANDEM_ASSIGN_OR_RETURN(logits, Step(*runner, std::span(&token, 1), pos, block_table));
  }
  out << detokenizer.Flush() << std::flush;
  stats.decode_ms = MillisSince(start);
  return stats;
}

}  // namespace tandem::cli
