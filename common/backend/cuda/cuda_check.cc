#include "common/backend/cuda/cuda_check.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace tandem::cuda_internal {

void CudaCheckFailed(cudaError_t error, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: CUDA call failed: %s: %s (%s)\n", file, line, expr,
               cudaGetErrorName(error), cudaGetErrorString(error));
  std::abort();
}

void CublasCheckFailed(cublasStatus_t status, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: cuBLAS call failed: %s: status %d\n", file, line, expr,
               static_cast<int>(status));
  std::abort();
}

absl::Status CudaErrorToStatus(cudaError_t error, const char* expr) {
  std::string message = absl::StrCat(expr, ": ", cudaGetErrorName(error), " (",
                                     cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::Status CublasErrorToStatus(cublasStatus_t status, const char* expr) {
  std::string message = absl::StrCat(expr, ": cuBLAS status ", static_cast<int>(status));
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) return absl::UnimplementedError(message);
  return absl::InternalError(message);
}

}  // namespace tandem::cuda_internal
