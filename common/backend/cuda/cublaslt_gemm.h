// GEMMs through cuBLASLt: bf16 operands, fp32 accumulation, bf16 or fp32 output.
//
//   out[m][n] = sum_k a[m][k] * w[n][k]   (+ out[m][n] when accumulating)
//
// a: [m][k] row-major bf16 (activations); w: [n][k] row-major bf16 (a Hugging Face Linear
// weight [out][in], used as stored); out: [m][ldc] row-major, columns [0, n) written.
// Algorithm choices are cached per shape. Not thread-safe: one owner (the engine thread).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "common/backend/cuda/cuda_handles.h"

namespace tandem {

enum class GemmOutput { kBF16, kF32 };

struct GemmArgs {
  const __nv_bfloat16* a = nullptr;  // [m][k]
  const __nv_bfloat16* w = nullptr;  // [n][k]
  void* out = nullptr;               // [m][ldc], __nv_bfloat16 or float per output
  int64_t m = 0, n = 0, k = 0;
  int64_t ldc = 0;                   // 0: n
  GemmOutput output = GemmOutput::kBF16;
  bool accumulate = false;  // out += a·wᵀ (beta = 1) instead of out = a·wᵀ; fp32 output only:
                            // fuses the residual add into the GEMM epilogue
};

class CublasLtGemm {
 public:
  static constexpr size_t kWorkspaceBytes = 32u << 20;

  static absl::StatusOr<std::unique_ptr<CublasLtGemm>> Create();
  ~CublasLtGemm();

  // InvalidArgument for non-positive sizes, ldc < n or null pointers.
  absl::Status MatMulTransposed(const GemmArgs& args, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, GemmOutput>;

  CublasLtGemm() = default;
  absl::StatusOr<Plan*> GetPlan(const GemmArgs& args);

  CublasLtHandle handle_;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace tandem
