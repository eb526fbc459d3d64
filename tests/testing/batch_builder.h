// Builds ForwardInputs for tests: sequences of tokens with their block tables.
//
//   BatchBuilder batch(/*block_size_tokens=*/16);
//   batch.Add(prompt_ids, /*first_position=*/0, table, LogitsFor::kLast);
//   runner->Forward(batch.inputs());
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "common/backend/model_runner.h"

namespace tandem::testing {

enum class LogitsFor { kNone, kLast, kAll };

class BatchBuilder {
 public:
  explicit BatchBuilder(int64_t block_size_tokens) : block_size_(block_size_tokens) {}

  // Appends one sequence's chunk: tokens at positions first_position.. using `block_table`.
  void Add(std::span<const int32_t> tokens, int32_t first_position,
           std::vector<int32_t> block_table, LogitsFor logits) {
    if (query_start_.empty()) query_start_.push_back(0);
    for (size_t i = 0; i < tokens.size(); ++i) {
      int32_t pos = first_position + static_cast<int32_t>(i);
      int32_t row = static_cast<int32_t>(token_ids_.size());
      token_ids_.push_back(tokens[i]);
      positions_.push_back(pos);
      slot_mapping_.push_back(block_table[pos / block_size_] * block_size_ + pos % block_size_);
      bool last = i + 1 == tokens.size();
      if (logits == LogitsFor::kAll || (logits == LogitsFor::kLast && last)) {
        logits_rows_.push_back(row);
      }
    }
    query_start_.push_back(static_cast<int32_t>(token_ids_.size()));
    tables_.push_back(std::move(block_table));
  }

  ForwardInputs inputs() const {
    ForwardInputs in{.token_ids = token_ids_, .positions = positions_,
                     .slot_mapping = slot_mapping_, .query_start = query_start_,
                     .block_tables = {}, .logits_rows = logits_rows_};
    for (const std::vector<int32_t>& t : tables_) in.block_tables.emplace_back(t);
    return in;
  }

 private:
  int64_t block_size_;
  std::vector<int32_t> token_ids_, positions_, slot_mapping_, query_start_, logits_rows_;
  std::vector<std::vector<int32_t>> tables_;
};

// Hands out block ids in a shuffled order, so tests exercise non-contiguous tables.
class ShuffledBlocks {
 public:
  ShuffledBlocks(int64_t num_blocks, uint32_t seed) : free_(num_blocks) {
    std::iota(free_.begin(), free_.end(), 0);
    std::shuffle(free_.begin(), free_.end(), std::mt19937(seed));
  }
  // Blocks for `num_tokens` tokens.
  std::vector<int32_t> Take(int64_t num_tokens, int64_t block_size_tokens) {
    int64_t count = (num_tokens + block_size_tokens - 1) / block_size_tokens;
    std::vector<int32_t> out(free_.end() - count, free_.end());
    free_.resize(free_.size() - count);
    return out;
  }

 private:
  std::vector<int32_t> free_;
};

}  // namespace tandem::testing
