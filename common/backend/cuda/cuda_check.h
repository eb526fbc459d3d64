// Checked CUDA and cuBLAS calls.
//
//   TANDEM_CUDA_CHECK(cudaMemcpyAsync(...));        // a failure is our bug: abort with the call
//   TANDEM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, n)); // the world can fail us: return a Status
//   TANDEM_CUDA_CHECK_LAUNCH();                     // after every kernel launch
//
// Usable from .cc (C++20) and .cu (C++17) files.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace tandem::cuda_internal {

[[noreturn]] void CudaCheckFailed(cudaError_t error, const char* expr, const char* file,
                                  int line);
[[noreturn]] void CublasCheckFailed(cublasStatus_t status, const char* expr, const char* file,
                                    int line);
// Internal (or ResourceExhausted for out-of-memory) naming the call and the CUDA error.
absl::Status CudaErrorToStatus(cudaError_t error, const char* expr);
absl::Status CublasErrorToStatus(cublasStatus_t status, const char* expr);

}  // namespace tandem::cuda_internal

#define TANDEM_CUDA_CHECK(expr)                                                          \
  do {                                                                                   \
    cudaError_t tandem_cuda_error_ = (expr);                                             \
    if (tandem_cuda_error_ != cudaSuccess) {                                             \
      ::tandem::cuda_internal::CudaCheckFailed(tandem_cuda_error_, #expr, __FILE__,      \
                                               __LINE__);                                \
    }                                                                                    \
  } while (false)

#define TANDEM_CUDA_CHECK_LAUNCH() TANDEM_CUDA_CHECK(cudaGetLastError())

#define TANDEM_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                   \
    cublasStatus_t tandem_cublas_status_ = (expr);                                       \
    if (tandem_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                \
      ::tandem::cuda_internal::CublasCheckFailed(tandem_cublas_status_, #expr, __FILE__, \
                                                 __LINE__);                              \
    }                                                                                    \
  } while (false)

#define TANDEM_CUDA_RETURN_IF_ERROR(expr)                                          \
  do {                                                                             \
    cudaError_t tandem_cuda_error_ = (expr);                                       \
    if (tandem_cuda_error_ != cudaSuccess) {                                       \
      return ::tandem::cuda_internal::CudaErrorToStatus(tandem_cuda_error_, #expr); \
    }                                                                              \
  } while (false)

#define TANDEM_CUBLAS_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                    \
    cublasStatus_t tandem_cublas_status_ = (expr);                                        \
    if (tandem_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                 \
      return ::tandem::cuda_internal::CublasErrorToStatus(tandem_cublas_status_, #expr);  \
    }                                                                                     \
  } while (false)
