// GEMMs through cuBLASLt: bf16 operands, fp32 accumulation, bf16 or fp32 output.
//
//   out[m][n] = sum_k a[m][k] * w[n][k]   (+ out[m][n] when accumulating)
//
// a: [m][k] row-major bf16 (activations); w: [n][k] row-major bf16 (a Hugging Face Linear
// weight [out][in], used as stored); out: [m][ldc] row-major, columns [0, n) written.
//
// Algorithms: the heuristic's first for each exact shape by default. With max_algorithms >
// 1, on the first use of a shape with m in [min_tuned_rows, max_tuned_rows] outside stream
// capture, up to max_algorithms of the heuristic's candidates are timed on the caller's
// operands (median of 5 runs each, in rounds over the candidates; below kMinTunedRows each
// run after an L2 flush) and the fastest is kept; the
// heuristic's first stays unless another is more than 2% faster. The choice is shared by
// every m of one bucket (four per power of two), checked with cublasLtMatmulAlgoCheck for
// each new m. Timing synchronizes the stream and, when accumulating, briefly allocates an
// fp32 [m][ldc] scratch output so the caller's output is not summed into (no memory: the
// heuristic's first). Smaller m, and any m while the stream is capturing, run the
// heuristic's first algorithm. Not thread-safe: one owner (the engine thread).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "absl/status/statusor.h"
#include "common/backend/cuda/cuda_handles.h"

namespace tandem {

// kSiluMulBf16 (the batch-1..8 GEMV only; cuBLASLt rejects it): w's rows are gate/up
// pairs (row 2j gate j, row 2j + 1 up j, the layout CudaWeights gives gate_up_proj) and
// out[m][n / 2] = bf16(silu(g) * u) with g and u rounded to bf16 first: the same bits as a
// bf16 GEMM followed by LaunchSiluMul, in one pass.
enum class GemmOutput { kBF16, kF32, kSiluMulBf16 };

struct GemmArgs {
  const __nv_bfloat16* a = nullptr;  // [m][k]
  const __nv_bfloat16* w = nullptr;  // [n][k]
  void* out = nullptr;               // [m][ldc], __nv_bfloat16 or float per output
                                     // (kSiluMulBf16: [m][ldc] with ldc >= n / 2, 0: n / 2)
  int64_t m = 0, n = 0, k = 0;
  int64_t ldc = 0;                   // 0: n
  GemmOutput output = GemmOutput::kBF16;
  bool accumulate = false;  // out += a·wᵀ (beta = 1) instead of out = a·wᵀ; fp32 output only:
                            // fuses the residual add into the GEMM epilogue
};

// Below this many rows (decode batches, short chunks) reading the weights dominates and
// back-to-back timing would see them in L2, unlike a model whose layers do not fit there:
// such shapes are not timed.
constexpr int64_t kMinTunedRows = 512;

struct CublasLtGemmOptions {
  // Heuristic candidates timed per shape bucket; 1 (the default) runs the heuristic's first
  // for each exact shape with no timing. On the H200 the first already reaches 84-100% of
  // the 8192^3 rate at the 8B prefill shapes and timed choices measured no faster there
  // (docs/cuda_backend.md, "Milestone 3: prefill"); the benchmark compares the two.
  int max_algorithms = 1;
  // The row counts timed when max_algorithms > 1. Below kMinTunedRows (decode batches) each
  // timed run follows a write of twice the L2 size, so the weights come from memory as in a
  // model's pass; at m = 64 on the 8B shapes the heuristic's first leaves 2-4% on gate_up
  // and down (cuda_model_bench --kernels_only, gemm_candidates_m64).
  int64_t min_tuned_rows = kMinTunedRows;
  int64_t max_tuned_rows = int64_t{1} << 62;
};

// m values sharing one tuned algorithm: m itself up to 64, then the next multiple of a
// quarter of m's power-of-two range (513..1024 -> 640, 768, 896, 1024).
int64_t GemmAlgorithmBucket(int64_t m);

class CublasLtGemm {
 public:
  static constexpr size_t kWorkspaceBytes = 32u << 20;

  // InvalidArgument for max_algorithms outside [1, 64].
  static absl::StatusOr<std::unique_ptr<CublasLtGemm>> Create(CublasLtGemmOptions options = {});
  ~CublasLtGemm();

  // InvalidArgument for non-positive sizes, ldc < n or null pointers.
  absl::Status MatMulTransposed(const GemmArgs& args, cudaStream_t stream);

  int num_tuned_buckets() const { return static_cast<int>(choices_.size()); }

 private:
  struct Plan;
  // (m or its bucket, n, k, ldc, output, accumulate)
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, GemmOutput, bool>;

  explicit CublasLtGemm(CublasLtGemmOptions options);
  absl::StatusOr<Plan*> GetPlan(const GemmArgs& args);
  absl::StatusOr<std::vector<cublasLtMatmulAlgo_t>> Candidates(const Plan& plan, int count);
  bool Runs(const Plan& plan, const cublasLtMatmulAlgo_t& algo);
  absl::Status ChooseAlgorithm(Plan& plan, const GemmArgs& args, cudaStream_t stream);
  absl::StatusOr<size_t> FastestCandidate(const Plan& plan, const GemmArgs& args,
                                          const std::vector<cublasLtMatmulAlgo_t>& candidates,
                                          cudaStream_t stream);

  CublasLtGemmOptions options_;
  CublasLtHandle handle_;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;   // exact m
  std::map<Key, cublasLtMatmulAlgo_t> choices_;  // m's bucket
};

}  // namespace tandem
