#include "common/backend/cuda/cublaslt_gemm.h"

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/status.h"

namespace tandem {

// One shape's descriptors and the heuristic's first algorithm.
struct CublasLtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, a_layout = nullptr, out_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (out_layout) TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(out_layout));
    if (a_layout) TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(a_layout));
    if (w_layout) TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(w_layout));
    if (op) TANDEM_CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
  }
};

absl::StatusOr<std::unique_ptr<CublasLtGemm>> CublasLtGemm::Create() {
  std::unique_ptr<CublasLtGemm> gemm(new CublasLtGemm());
  TANDEM_ASSIGN_OR_RETURN(gemm->handle_, CublasLtHandle::Create());
  TANDEM_ASSIGN_OR_RETURN(gemm->workspace_, DeviceBuffer::Allocate(kWorkspaceBytes));
  return gemm;
}

CublasLtGemm::~CublasLtGemm() = default;

// cuBLAS is column-major: row-major out[m][n] is column-major out^T [n][m], which equals
// W (column-major [k][n], transposed) times A (column-major [k][m]).
absl::StatusOr<CublasLtGemm::Plan*> CublasLtGemm::GetPlan(const GemmArgs& args) {
  const int64_t ldc = args.ldc == 0 ? args.n : args.ldc;
  Key key{args.m, args.n, args.k, ldc, args.output};
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
  cudaDataType_t out_type = args.output == GemmOutput::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  TANDEM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t transpose = CUBLAS_OP_T, no_transpose = CUBLAS_OP_N;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &no_transpose, sizeof(no_transpose)));
  TANDEM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->w_layout, CUDA_R_16BF, args.k, args.n, args.k));
  TANDEM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->a_layout, CUDA_R_16BF, args.k, args.m, args.k));
  TANDEM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatrixLayoutCreate(&plan->out_layout, out_type, args.n, args.m, ldc));

  cublasLtMatmulPreference_t preference = nullptr;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&preference));
  size_t workspace_bytes = kWorkspaceBytes;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
      sizeof(workspace_bytes));
  cublasLtMatmulHeuristicResult_t result{};
  int num_results = 0;
  if (status == CUBLAS_STATUS_SUCCESS) {
    status = cublasLtMatmulAlgoGetHeuristic(handle_.get(), plan->op, plan->w_layout,
                                            plan->a_layout, plan->out_layout, plan->out_layout,
                                            preference, 1, &result, &num_results);
  }
  TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
  TANDEM_CUBLAS_RETURN_IF_ERROR(status);
  if (num_results == 0) {
    return absl::UnimplementedError(absl::StrCat("cuBLASLt has no algorithm for m=", args.m,
                                                 " n=", args.n, " k=", args.k));
  }
  plan->algo = result.algo;
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status CublasLtGemm::MatMulTransposed(const GemmArgs& args, cudaStream_t stream) {
  if (args.m <= 0 || args.n <= 0 || args.k <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("gemm sizes must be > 0, got m=", args.m,
                                                   " n=", args.n, " k=", args.k));
  }
  if (args.ldc != 0 && args.ldc < args.n) {
    return absl::InvalidArgumentError(absl::StrCat("gemm ldc must be >= n=", args.n, ", got ",
                                                   args.ldc));
  }
  if (args.a == nullptr || args.w == nullptr || args.out == nullptr) {
    return absl::InvalidArgumentError("gemm pointers must not be null");
  }
  if (args.accumulate && args.output != GemmOutput::kF32) {
    return absl::InvalidArgumentError("gemm: accumulate needs fp32 output");
  }
  TANDEM_ASSIGN_OR_RETURN(Plan * plan, GetPlan(args));
  const float alpha = 1.0f, beta = args.accumulate ? 1.0f : 0.0f;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(
      handle_.get(), plan->op, &alpha, args.w, plan->w_layout, args.a, plan->a_layout, &beta,
      args.out, plan->out_layout, args.out, plan->out_layout, &plan->algo, workspace_.data(),
      kWorkspaceBytes, stream));
  return absl::OkStatus();
}

}  // namespace tandem
