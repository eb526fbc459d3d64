// Embedding gather: out[t] = table[token_ids[t]]; the plain row gather the runner uses to
// carry only the logits rows through the last layer's MLP; and the fed-token resolution of
// pipelined steps.
//
// table: [vocab_size][dim] bf16; token_ids: [num_tokens] on the device; out: [num_tokens][dim]
// as fp32 (the residual stream) or bf16 (gathering hidden rows for the logits). Ids must be
// validated by the caller (ValidateForwardInputs); a row with an out-of-range id is filled
// with NaN instead of reading outside the table. Reference: reference::EmbeddingGather.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace tandem {

struct EmbeddingGatherArgs {
  const __nv_bfloat16* table = nullptr;  // [vocab_size][dim]
  const int32_t* token_ids = nullptr;    // [num_tokens]
  int64_t vocab_size = 0;
  int64_t dim = 0;
  int64_t num_tokens = 0;
};

absl::Status LaunchEmbeddingGather(const EmbeddingGatherArgs& args, float* out,
                                   cudaStream_t stream);
absl::Status LaunchEmbeddingGather(const EmbeddingGatherArgs& args, __nv_bfloat16* out,
                                   cudaStream_t stream);

// Row gather: out row i = in row rows[i] for i < num_rows, rows of row_bytes bytes (any
// element type; in and out must not overlap). Row ids must be validated by the caller.
struct GatherRowsArgs {
  const void* in = nullptr;
  const int32_t* rows = nullptr;  // [num_rows] on the device
  void* out = nullptr;
  int64_t num_rows = 0;
  int64_t row_bytes = 0;
};

absl::Status LaunchGatherRows(const GatherRowsArgs& args, cudaStream_t stream);

// Fed tokens (ModelRunner's FedTokenId): every id < 0 in token_ids, -1 - r, becomes the token
// the sampler left for its row r: sampled[r * sampled_stride] (int32 elements apart, the
// CudaSampler's result records), in place. Non-negative ids stay. The caller validated r
// against the sampling's rows. A row the sampler failed (token -1, no finite logit) feeds
// -1, which the embedding gather turns into a NaN row; its request is aborted when the
// sampling is collected.
struct FedTokensArgs {
  int32_t* token_ids = nullptr;     // [num_tokens] on the device
  int64_t num_tokens = 0;
  const int32_t* sampled = nullptr;  // device-readable (device or mapped host memory)
  int64_t sampled_stride = 1;
};

absl::Status LaunchResolveFedTokens(const FedTokensArgs& args, cudaStream_t stream);

}  // namespace tandem
