#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/device_utils.cuh"
#include "common/backend/cuda/kernels/embedding.h"

namespace tandem {
namespace {

using cuda_kernels::Aligned16;
using cuda_kernels::LoadBf16x8;

__device__ __forceinline__ void Store(float* p, float v) { *p = v; }
__device__ __forceinline__ void Store(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

template <typename Out>
__device__ __forceinline__ void Store8(Out* p, const float (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) Store(p + i, v[i]);
}

// One block per token.
template <typename Out>
__global__ void EmbeddingGatherKernel(EmbeddingGatherArgs args, Out* out) {
  const int64_t t = blockIdx.x;
  const int32_t id = args.token_ids[t];
  Out* row_out = out + t * args.dim;
  if (id < 0 || id >= args.vocab_size) {
    for (int64_t i = threadIdx.x; i < args.dim; i += blockDim.x) Store(row_out + i, NAN);
    return;
  }
  const __nv_bfloat16* row = args.table + static_cast<int64_t>(id) * args.dim;
  if (args.dim % 8 == 0 && Aligned16(row)) {
    for (int64_t i = threadIdx.x * 8; i < args.dim; i += blockDim.x * 8) {
      float v[8];
      LoadBf16x8(row + i, v);
      Store8(row_out + i, v);
    }
  } else {
    for (int64_t i = threadIdx.x; i < args.dim; i += blockDim.x) {
      Store(row_out + i, __bfloat162float(row[i]));
    }
  }
}

template <typename Out>
absl::Status Launch(const EmbeddingGatherArgs& args, Out* out, cudaStream_t stream) {
  if (args.vocab_size <= 0 || args.dim <= 0 || args.num_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedding gather: vocab_size and dim must be > 0 and num_tokens >= 0, got ",
        args.vocab_size, ", ", args.dim, ", ", args.num_tokens));
  }
  if (args.num_tokens == 0) return absl::OkStatus();
  if (args.table == nullptr || args.token_ids == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("embedding gather: null pointer");
  }
  EmbeddingGatherKernel<Out><<<static_cast<unsigned>(args.num_tokens), 128, 0, stream>>>(args, out);
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

// One block per row: 16-byte copies when the rows allow them, else bytes.
__global__ void GatherRowsKernel(GatherRowsArgs args, bool vec16) {
  const int64_t i = blockIdx.x;
  const char* in = static_cast<const char*>(args.in) + args.rows[i] * args.row_bytes;
  char* out = static_cast<char*>(args.out) + i * args.row_bytes;
  if (vec16) {
    for (int64_t b = threadIdx.x * 16; b < args.row_bytes; b += blockDim.x * 16) {
      *reinterpret_cast<uint4*>(out + b) = *reinterpret_cast<const uint4*>(in + b);
    }
  } else {
    for (int64_t b = threadIdx.x; b < args.row_bytes; b += blockDim.x) out[b] = in[b];
  }
}

__global__ void ResolveFedTokensKernel(FedTokensArgs args) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= args.num_tokens) return;
  const int32_t id = args.token_ids[t];
  if (id < 0) args.token_ids[t] = args.sampled[static_cast<int64_t>(-1 - id) * args.sampled_stride];
}

}  // namespace

absl::Status LaunchGatherRows(const GatherRowsArgs& args, cudaStream_t stream) {
  if (args.num_rows < 0 || args.row_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gather rows: num_rows must be >= 0 and row_bytes > 0, got ", args.num_rows, ", ",
        args.row_bytes));
  }
  if (args.num_rows == 0) return absl::OkStatus();
  if (args.in == nullptr || args.rows == nullptr || args.out == nullptr) {
    return absl::InvalidArgumentError("gather rows: null pointer");
  }
  const bool vec16 = args.row_bytes % 16 == 0 && Aligned16(args.in) && Aligned16(args.out);
  GatherRowsKernel<<<static_cast<unsigned>(args.num_rows), 256, 0, stream>>>(args, vec16);
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status LaunchResolveFedTokens(const FedTokensArgs& args, cudaStream_t stream) {
  if (args.num_tokens < 0 || args.sampled_stride <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resolve fed tokens: num_tokens must be >= 0 and sampled_stride > 0, got ",
        args.num_tokens, ", ", args.sampled_stride));
  }
  if (args.num_tokens == 0) return absl::OkStatus();
  if (args.token_ids == nullptr || args.sampled == nullptr) {
    return absl::InvalidArgumentError("resolve fed tokens: null pointer");
  }
  constexpr int kThreads = 256;
  const auto blocks = static_cast<unsigned>((args.num_tokens + kThreads - 1) / kThreads);
  ResolveFedTokensKernel<<<blocks, kThreads, 0, stream>>>(args);
  TANDEM_CUDA_CHECK_LAUNCH();
  return absl::OkStatus();
}

absl::Status LaunchEmbeddingGather(const EmbeddingGatherArgs& args, float* out,
                                   cudaStream_t stream) {
  return Launch(args, out, stream);
}

absl::Status LaunchEmbeddingGather(const EmbeddingGatherArgs& args, __nv_bfloat16* out,
                                   cudaStream_t stream) {
  return Launch(args, out, stream);
}

}  // namespace tandem
