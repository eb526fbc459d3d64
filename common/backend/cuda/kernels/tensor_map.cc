#include "common/backend/cuda/kernels/tensor_map.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tandem {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 TensorMapEncoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function, 12000,
                                         cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(function);
  }();
  return encode;
}

}  // namespace

absl::Status MakeBf16TensorMap(CUtensorMap* map, const void* base, absl::Span<const uint64_t> dims,
                               absl::Span<const uint64_t> byte_strides,
                               absl::Span<const uint32_t> box) {
  const size_t rank = dims.size();
  if (rank < 1 || rank > 5 || byte_strides.size() + 1 != rank || box.size() != rank) {
    return absl::InvalidArgumentError(absl::StrCat("tensor map: rank ", rank, " with ",
                                                   byte_strides.size(), " strides and ",
                                                   box.size(), " box dims"));
  }
  const PFN_cuTensorMapEncodeTiled_v12000 encode = TensorMapEncoder();
  if (encode == nullptr) return absl::InternalError("tensor map: no cuTensorMapEncodeTiled");
  cuuint64_t d[5], s[4];
  cuuint32_t b[5], element_strides[5];
  for (size_t i = 0; i < rank; ++i) {
    d[i] = dims[i];
    b[i] = box[i];
    element_strides[i] = 1;
    if (i + 1 < rank) s[i] = byte_strides[i];
  }
  const CUresult result = encode(
      map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, static_cast<cuuint32_t>(rank), const_cast<void*>(base),
      d, s, b, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (result != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("tensor map: cuTensorMapEncodeTiled failed (",
                                            static_cast<int>(result), ") for dims [",
                                            absl::StrJoin(dims, ", "), "], box [",
                                            absl::StrJoin(box, ", "), "]"));
  }
  return absl::OkStatus();
}

}  // namespace tandem
