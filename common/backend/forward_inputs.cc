#include "common/backend/model_runner.h"
#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

absl::Status Invalid(auto&&... parts) {
  return absl::InvalidArgumentError(absl::StrCat(parts...));
}

absl::Status ValidateLengths(const ForwardInputs& in) {
  size_t num_tokens = in.token_ids.size();
  if (num_tokens == 0) return Invalid("token_ids must not be empty");
  if (in.positions.size() != num_tokens) {
    return Invalid("positions has ", in.positions.size(), " entries, token_ids has ", num_tokens);
  }
  if (in.slot_mapping.size() != num_tokens) {
    return Invalid("slot_mapping has ", in.slot_mapping.size(), " entries, token_ids has ",
                   num_tokens);
  }
  if (in.query_start.size() != in.block_tables.size() + 1) {
    return Invalid("query_start must have num_seqs + 1 = ", in.block_tables.size() + 1,
                   " entries, got ", in.query_start.size());
  }
  if (in.query_start.front() != 0 || static_cast<size_t>(in.query_start.back()) != num_tokens) {
    return Invalid("query_start must run from 0 to num_tokens = ", num_tokens);
  }
  return absl::OkStatus();
}

absl::Status ValidateSequence(const ForwardInputs& in, size_t s, int64_t num_kv_blocks,
                              int64_t block_size, int64_t max_positions) {
  int32_t begin = in.query_start[s], end = in.query_start[s + 1];
  if (end <= begin) return Invalid("query_start must be strictly increasing at sequence ", s);
  std::span<const int32_t> table = in.block_tables[s];
  for (int32_t block : table) {
    if (block < 0 || block >= num_kv_blocks) {
      return Invalid("block_tables[", s, "] holds block ", block, " outside [0, ", num_kv_blocks,
                     ")");
    }
  }
  for (int32_t t = begin; t < end; ++t) {
    int32_t pos = in.positions[t];
    if (pos < 0 || pos >= max_positions) {
      return Invalid("positions[", t, "] = ", pos, " outside [0, ", max_positions, ")");
    }
    if (t > begin && pos != in.positions[t - 1] + 1) {
      return Invalid("positions of sequence ", s, " must be consecutive at token ", t);
    }
    int64_t block_index = pos / block_size;
    if (block_index >= static_cast<int64_t>(table.size())) {
      return Invalid("block_tables[", s, "] has ", table.size(), " blocks, position ", pos,
                     " needs ", block_index + 1);
    }
    int64_t expected_slot = table[block_index] * block_size + pos % block_size;
    if (in.slot_mapping[t] != expected_slot) {
      return Invalid("slot_mapping[", t, "] = ", in.slot_mapping[t], " but the block table puts ",
                     "position ", pos, " at slot ", expected_slot);
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRows(const ForwardInputs& in, int64_t vocab_size, int64_t num_fed_rows) {
  int64_t num_tokens = static_cast<int64_t>(in.token_ids.size());
  for (size_t i = 0; i < in.token_ids.size(); ++i) {
    const int32_t id = in.token_ids[i];
    if (id < 0 && FedTokenRow(id) < num_fed_rows) continue;  // a pending sampled row
    if (id < 0 || id >= vocab_size) {
      if (id < 0 && num_fed_rows > 0) {
        return Invalid("token_ids[", i, "] = ", id, " outside [0, ", vocab_size,
                       ") and names no row of the pending sampling (", num_fed_rows, " rows)");
      }
      return Invalid("token_ids[", i, "] = ", id, " outside [0, ", vocab_size, ")");
    }
  }
  for (size_t i = 0; i < in.logits_rows.size(); ++i) {
    int32_t row = in.logits_rows[i];
    if (row < 0 || row >= num_tokens) {
      return Invalid("logits_rows[", i, "] = ", row, " outside [0, ", num_tokens, ")");
    }
    if (i > 0 && row <= in.logits_rows[i - 1]) {
      return Invalid("logits_rows must be strictly ascending at index ", i);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateForwardInputs(const ForwardInputs& inputs, int64_t num_kv_blocks,
                                   int64_t block_size_tokens, int64_t max_positions,
                                   int64_t vocab_size, int64_t num_fed_rows) {
  if (absl::Status s = ValidateLengths(inputs); !s.ok()) return s;
  for (size_t s = 0; s + 1 < inputs.query_start.size(); ++s) {
    absl::Status status =
        ValidateSequence(inputs, s, num_kv_blocks, block_size_tokens, max_positions);
    if (!status.ok()) return status;
  }
  return ValidateRows(inputs, vocab_size, num_fed_rows);
}

}  // namespace tandem
