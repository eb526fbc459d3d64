// Teacher-forced logits of a checkpoint on the CUDA runner, for comparison with Hugging Face
// transformers (tools/compare_llama8b_logits.py; scripts/gpu_check.sh runs both on the
// 8B-shaped random checkpoint). Seeded random prompts (ids uniform in [0, vocab)) go through
// one prefill Forward, one sequence each, with logits for every position; the ids and the
// logits are written to one safetensors file:
//   prompt{i}.ids     I32 [len_i]
//   prompt{i}.logits  F32 [len_i][vocab]
//
//   cuda_logits_dump --model=/tmp/llama8b --out=/tmp/tandem_logits.safetensors
//                    [--lengths=7,64,300] [--seed=1]
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/backend/cuda/cuda_model_runner.h"
#include "common/model/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

constexpr int64_t kBlockSizeTokens = 16;

struct Options {
  std::string model_dir;
  std::string out_path;
  std::vector<int32_t> lengths = {7, 64, 300};  // tokens per prompt
  uint32_t seed = 1;
};

template <typename T>
SafetensorsTensor MakeTensor(std::string name, std::string dtype, std::vector<int64_t> shape,
                             std::span<const T> values) {
  return {std::move(name), std::move(dtype), std::move(shape),
          std::string(reinterpret_cast<const char*>(values.data()), values.size_bytes())};
}

// The arrays one batched prefill's ForwardInputs points into.
struct PrefillBatch {
  std::vector<std::vector<int32_t>> prompts;  // [num_seqs][len]
  std::vector<std::vector<int32_t>> tables;   // [num_seqs][blocks], shuffled block ids
  std::vector<int32_t> ids, positions, slots, query_start, logits_rows;

  ForwardInputs Inputs() const {
    ForwardInputs in{.token_ids = ids,
                     .positions = positions,
                     .slot_mapping = slots,
                     .query_start = query_start,
                     .block_tables = {},
                     .logits_rows = logits_rows};
    for (const std::vector<int32_t>& t : tables) in.block_tables.emplace_back(t);
    return in;
  }
};

// Random prompts of `lengths` tokens, each its own sequence from position 0 with logits at
// every position; block ids handed out shuffled so the tables are not contiguous.
PrefillBatch MakeBatch(const Options& options, int64_t vocab_size, int64_t num_blocks) {
  PrefillBatch b;
  std::mt19937 rng(options.seed);
  std::vector<int32_t> free_blocks(num_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab_size - 1));
  b.query_start.push_back(0);
  for (int32_t len : options.lengths) {
    std::vector<int32_t>& prompt = b.prompts.emplace_back(len);
    for (int32_t& id : prompt) id = token(rng);
    std::vector<int32_t>& table = b.tables.emplace_back();
    for (int64_t i = 0; i < (len + kBlockSizeTokens - 1) / kBlockSizeTokens; ++i) {
      table.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    for (int32_t pos = 0; pos < len; ++pos) {
      b.logits_rows.push_back(static_cast<int32_t>(b.ids.size()));
      b.ids.push_back(prompt[pos]);
      b.positions.push_back(pos);
      b.slots.push_back(static_cast<int32_t>(table[pos / kBlockSizeTokens] * kBlockSizeTokens +
                                             pos % kBlockSizeTokens));
    }
    b.query_start.push_back(static_cast<int32_t>(b.ids.size()));
  }
  return b;
}

absl::Status Run(const Options& options) {
  const int64_t num_tokens =
      std::accumulate(options.lengths.begin(), options.lengths.end(), int64_t{0});
  int64_t num_blocks = 0;
  for (int32_t len : options.lengths) num_blocks += (len + kBlockSizeTokens - 1) / kBlockSizeTokens;
  // Just the blocks the prompts need: the KV pool is not what this measures.
  TANDEM_ASSIGN_OR_RETURN(
      std::unique_ptr<CudaModelRunner> runner,
      CudaModelRunner::Load(options.model_dir,
                            {.block_size_tokens = kBlockSizeTokens,
                             .num_kv_blocks = num_blocks,
                             .max_num_tokens = num_tokens,
                             .max_num_seqs = static_cast<int64_t>(options.lengths.size()),
                             .max_logits_rows = num_tokens,
                             .gpu_sampling = false}));
  const ModelConfig& config = runner->config();
  for (int32_t len : options.lengths) {
    if (len > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--lengths must be in [1, ", config.max_position_embeddings, "], got ", len));
    }
  }
  PrefillBatch batch = MakeBatch(options, config.vocab_size, num_blocks);
  TANDEM_ASSIGN_OR_RETURN(LogitsView logits, runner->Forward(batch.Inputs()));

  std::vector<SafetensorsTensor> tensors;
  int64_t row = 0;
  for (size_t p = 0; p < batch.prompts.size(); ++p) {
    const int64_t len = static_cast<int64_t>(batch.prompts[p].size());
    tensors.push_back(MakeTensor(absl::StrCat("prompt", p, ".ids"), "I32", {len},
                                 std::span<const int32_t>(batch.prompts[p])));
    tensors.push_back(
        MakeTensor(absl::StrCat("prompt", p, ".logits"), "F32", {len, config.vocab_size},
                   logits.values.subspan(row * config.vocab_size, len * config.vocab_size)));
    row += len;
  }
  nlohmann::json metadata = {{"model", options.model_dir},
                             {"seed", std::to_string(options.seed)},
                             {"runner", "CudaModelRunner, one batched prefill"}};
  const std::string image = SerializeSafetensors(tensors, metadata.dump());
  std::ofstream out(options.out_path, std::ios::binary | std::ios::trunc);
  out.write(image.data(), static_cast<std::streamsize>(image.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", options.out_path, " failed"));
  std::cout << "wrote logits of " << num_tokens << " positions (" << batch.prompts.size()
            << " prompts, vocab " << config.vocab_size << ") to " << options.out_path << "\n";
  return absl::OkStatus();
}

absl::StatusOr<Options> ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--model=", 0) == 0) {
      o.model_dir = arg.substr(8);
    } else if (arg.rfind("--out=", 0) == 0) {
      o.out_path = arg.substr(6);
    } else if (arg.rfind("--seed=", 0) == 0) {
      if (!absl::SimpleAtoi(arg.substr(7), &o.seed)) {
        return absl::InvalidArgumentError("--seed must be a non-negative integer, got " + arg);
      }
    } else if (arg.rfind("--lengths=", 0) == 0) {
      o.lengths.clear();
      for (absl::string_view part : absl::StrSplit(arg.substr(10), ',')) {
        int32_t len = 0;
        if (!absl::SimpleAtoi(part, &len) || len <= 0) {
          return absl::InvalidArgumentError(
              absl::StrCat("--lengths must be positive integers, got \"", part, "\""));
        }
        o.lengths.push_back(len);
      }
    } else {
      return absl::InvalidArgumentError("unknown flag " + arg);
    }
  }
  if (o.model_dir.empty() || o.out_path.empty() || o.lengths.empty()) {
    return absl::InvalidArgumentError(
        "usage: cuda_logits_dump --model=DIR --out=FILE [--lengths=7,64,300] [--seed=1]");
  }
  return o;
}

}  // namespace
}  // namespace tandem::bench

int main(int argc, char** argv) {
  absl::StatusOr<tandem::bench::Options> options = tandem::bench::ParseFlags(argc, argv);
  if (!options.ok()) {
    std::cerr << options.status() << "\n";
    return 2;
  }
  absl::Status status = tandem::bench::Run(*options);
  if (!status.ok()) {
    std::cerr << status << "\n";
    return 1;
  }
  return 0;
}
