#include "common/backend/cuda/cublaslt_gemm.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/status.h"

namespace tandem {
namespace {

constexpr size_t kTimedRuns = 5;               // per candidate, after one warm-up run
constexpr double kKeepHeuristicMargin = 1.02;  // the first candidate stays unless beaten by 2%

}  // namespace

// One exact shape's descriptors and its algorithm.
struct CublasLtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, a_layout = nullptr, out_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool chosen = false;  // false until an algorithm is kept for good (not during capture)

  ~Plan() {
    if (out_layout) TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(out_layout));
    if (a_layout) TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(a_layout));
    if (w_layout) TANDEM_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(w_layout));
    if (op) TANDEM_CUBLAS_CHECK(cublasLtMatmulDescDestroy(op));
  }
};

int64_t GemmAlgorithmBucket(int64_t m) {
  if (m <= 64) return m;
  // m - 1 in [2^p, 2^(p+1)): steps of 2^(p-2), rounded up
  const int p = std::bit_width(static_cast<uint64_t>(m - 1)) - 1;
  const int64_t step = int64_t{1} << (p - 2);
  return (m + step - 1) / step * step;
}

absl::StatusOr<std::unique_ptr<CublasLtGemm>> CublasLtGemm::Create(CublasLtGemmOptions options) {
  if (options.max_algorithms < 1 || options.max_algorithms > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("cublaslt max_algorithms must be in [1, 64], got ", options.max_algorithms));
  }
  if (options.min_tuned_rows < 1 || options.max_tuned_rows < options.min_tuned_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cublaslt tuned rows must satisfy 1 <= min_tuned_rows <= max_tuned_rows, got ",
        options.min_tuned_rows, " and ", options.max_tuned_rows));
  }
  std::unique_ptr<CublasLtGemm> gemm(new CublasLtGemm(options));
  TANDEM_ASSIGN_OR_RETURN(gemm->handle_, CublasLtHandle::Create());
  TANDEM_ASSIGN_OR_RETURN(gemm->workspace_, DeviceBuffer::Allocate(kWorkspaceBytes));
  return gemm;
}

CublasLtGemm::CublasLtGemm(CublasLtGemmOptions options) : options_(options) {}
CublasLtGemm::~CublasLtGemm() = default;

// cuBLAS is column-major: row-major out[m][n] is column-major out^T [n][m], which equals
// W (column-major [k][n], transposed) times A (column-major [k][m]).
absl::StatusOr<CublasLtGemm::Plan*> CublasLtGemm::GetPlan(const GemmArgs& args) {
  const int64_t ldc = args.ldc == 0 ? args.n : args.ldc;
  Key key{args.m, args.n, args.k, ldc, args.output, args.accumulate};
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
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

// The heuristic's first `count` algorithms for the plan's shape, best first.
absl::StatusOr<std::vector<cublasLtMatmulAlgo_t>> CublasLtGemm::Candidates(const Plan& plan,
                                                                           int count) {
  cublasLtMatmulPreference_t preference = nullptr;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&preference));
  size_t workspace_bytes = kWorkspaceBytes;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
      sizeof(workspace_bytes));
  std::vector<cublasLtMatmulHeuristicResult_t> results(count);
  int num_results = 0;
  if (status == CUBLAS_STATUS_SUCCESS) {
    status = cublasLtMatmulAlgoGetHeuristic(handle_.get(), plan.op, plan.w_layout, plan.a_layout,
                                            plan.out_layout, plan.out_layout, preference, count,
                                            results.data(), &num_results);
  }
  TANDEM_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
  TANDEM_CUBLAS_RETURN_IF_ERROR(status);
  std::vector<cublasLtMatmulAlgo_t> algos;
  for (int i = 0; i < num_results; ++i) {
    if (results[i].state == CUBLAS_STATUS_SUCCESS) algos.push_back(results[i].algo);
  }
  return algos;
}

bool CublasLtGemm::Runs(const Plan& plan, const cublasLtMatmulAlgo_t& algo) {
  cublasLtMatmulHeuristicResult_t result{};
  return cublasLtMatmulAlgoCheck(handle_.get(), plan.op, plan.w_layout, plan.a_layout,
                                 plan.out_layout, plan.out_layout, &algo,
                                 &result) == CUBLAS_STATUS_SUCCESS &&
         result.workspaceSize <= kWorkspaceBytes;
}

// Bucket's choice if it runs at this m; else the heuristic's first, timed against the others
// when nothing is chosen for the bucket yet and the stream is not capturing.
absl::Status CublasLtGemm::ChooseAlgorithm(Plan& plan, const GemmArgs& args, cudaStream_t stream) {
  const Key bucket{GemmAlgorithmBucket(args.m),       args.n,      args.k,
                   args.ldc == 0 ? args.n : args.ldc, args.output, args.accumulate};
  const bool tuning = options_.max_algorithms > 1 && args.m >= options_.min_tuned_rows &&
                      args.m <= options_.max_tuned_rows;
  auto chosen = choices_.find(bucket);
  if (tuning && chosen != choices_.end() && Runs(plan, chosen->second)) {
    plan.algo = chosen->second;
    plan.chosen = true;
    return absl::OkStatus();
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
  const bool can_time =
      tuning && chosen == choices_.end() && capture == cudaStreamCaptureStatusNone;
  TANDEM_ASSIGN_OR_RETURN(std::vector<cublasLtMatmulAlgo_t> candidates,
                          Candidates(plan, can_time ? options_.max_algorithms : 1));
  if (candidates.empty()) {
    return absl::UnimplementedError(absl::StrCat("cuBLASLt has no algorithm for m=", args.m,
                                                 " n=", args.n, " k=", args.k));
  }
  plan.algo = candidates[0];
  plan.chosen = !tuning || chosen != choices_.end() || capture == cudaStreamCaptureStatusNone;
  if (!can_time) return absl::OkStatus();
  TANDEM_ASSIGN_OR_RETURN(size_t fastest, FastestCandidate(plan, args, candidates, stream));
  plan.algo = candidates[fastest];
  choices_.emplace(bucket, plan.algo);
  return absl::OkStatus();
}

// Index of the fastest candidate (median of kTimedRuns back-to-back runs, timed in rounds
// over the candidates); 0 when there are no others or no memory for the accumulating scratch
// output.
absl::StatusOr<size_t> CublasLtGemm::FastestCandidate(
    const Plan& plan, const GemmArgs& args, const std::vector<cublasLtMatmulAlgo_t>& candidates,
    cudaStream_t stream) {
  if (candidates.size() == 1) return 0;
  // Timing runs write the caller's output, which the real call then overwrites, except
  // when accumulating (beta = 1): those write a zeroed scratch instead.
  DeviceBuffer scratch;
  void* out = args.out;
  if (args.accumulate) {
    const size_t out_bytes = args.m * (args.ldc == 0 ? args.n : args.ldc) * sizeof(float);
    absl::StatusOr<DeviceBuffer> allocated = DeviceBuffer::Allocate(out_bytes);
    if (!allocated.ok()) {
      (void)cudaGetLastError();  // the failed cudaMalloc must not fail a later launch check
      return 0;
    }
    scratch = *std::move(allocated);
    out = scratch.data();
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, out_bytes, stream));
  }
  const float alpha = 1.0f, beta = args.accumulate ? 1.0f : 0.0f;
  auto run = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle_.get(), plan.op, &alpha, args.w, plan.w_layout, args.a,
                          plan.a_layout, &beta, out, plan.out_layout, out, plan.out_layout, &algo,
                          workspace_.data(), kWorkspaceBytes, stream);
  };
  // Small m: the weights would stay in L2 between back-to-back runs (a decode step's GEMMs
  // read them from memory), so every timed run follows a write of twice the L2 size.
  DeviceBuffer flush;
  if (args.m < kMinTunedRows) {
    int device = 0, l2_bytes = 0;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device));
    absl::StatusOr<DeviceBuffer> allocated =
        DeviceBuffer::Allocate(2 * static_cast<size_t>(std::max(l2_bytes, 1 << 20)));
    if (!allocated.ok()) {
      (void)cudaGetLastError();
      return 0;
    }
    flush = *std::move(allocated);
  }
  std::vector<size_t> runnable;  // one warm-up run each (clocks up); skip what fails
  for (size_t c = 0; c < candidates.size(); ++c) {
    if (run(candidates[c]) == CUBLAS_STATUS_SUCCESS) runnable.push_back(c);
  }
  // Rounds over all candidates, so that clock or thermal drift during the timing spreads
  // over every candidate instead of favouring the ones timed last.
  const size_t timed = kTimedRuns * runnable.size();
  std::vector<CudaEvent> marks;  // marks[2i], marks[2i + 1] bracket the i-th timed run
  for (size_t i = 0; i < 2 * timed; ++i) {
    TANDEM_ASSIGN_OR_RETURN(CudaEvent event, CudaEvent::Create());
    marks.push_back(std::move(event));
  }
  for (size_t i = 0; i < timed; ++i) {
    if (flush.size_bytes() > 0) {
      TANDEM_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(flush.data(), static_cast<int>(i & 0xff), flush.size_bytes(), stream));
    }
    marks[2 * i].Record(stream);
    TANDEM_CUBLAS_RETURN_IF_ERROR(run(candidates[runnable[i % runnable.size()]]));
    marks[2 * i + 1].Record(stream);
  }
  if (timed > 0) marks.back().Synchronize();
  std::vector<float> median_ms(candidates.size(), INFINITY);
  for (size_t j = 0; j < runnable.size(); ++j) {
    std::vector<float> ms;
    for (size_t i = j; i < timed; i += runnable.size()) {
      ms.push_back(marks[2 * i + 1].ElapsedMsSince(marks[2 * i]));
    }
    std::nth_element(ms.begin(), ms.begin() + kTimedRuns / 2, ms.end());
    median_ms[runnable[j]] = ms[kTimedRuns / 2];
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));  // before scratch is freed
  const size_t fastest = std::min_element(median_ms.begin(), median_ms.end()) - median_ms.begin();
  return median_ms[0] <= kKeepHeuristicMargin * median_ms[fastest] ? 0 : fastest;
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
  if (args.output == GemmOutput::kSiluMulBf16) {
    return absl::InvalidArgumentError(
        "gemm: output kSiluMulBf16 is the GEMV's (m <= 8); use kBF16 and LaunchSiluMul");
  }
  TANDEM_ASSIGN_OR_RETURN(Plan * plan, GetPlan(args));
  if (!plan->chosen) TANDEM_RETURN_IF_ERROR(ChooseAlgorithm(*plan, args, stream));
  const float alpha = 1.0f, beta = args.accumulate ? 1.0f : 0.0f;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(
      handle_.get(), plan->op, &alpha, args.w, plan->w_layout, args.a, plan->a_layout, &beta,
      args.out, plan->out_layout, args.out, plan->out_layout, &plan->algo, workspace_.data(),
      kWorkspaceBytes, stream));
  return absl::OkStatus();
}

}  // namespace tandem
