// Tensor maps for the copy engine's tensor copies (cp.async.bulk.tensor, sm_90): bf16 boxes
// whose 128-byte inner rows land with the 128-byte swizzle the wgmma descriptors expect
// (mma.cuh, SwizzledKMajorDescriptor / SwizzledMnMajorDescriptor).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace tandem {

// A bf16 tensor of dims.size() dimensions (innermost first) at `base`, dimension i + 1 being
// byte_strides[i] bytes apart, cut into boxes of `box` elements (box[0] * 2 <= 128 bytes);
// elements outside the tensor read as zeros. The driver's encoder is found once through the
// runtime (no link against libcuda).
absl::Status MakeBf16TensorMap(CUtensorMap* map, const void* base, absl::Span<const uint64_t> dims,
                               absl::Span<const uint64_t> byte_strides,
                               absl::Span<const uint32_t> box);

}  // namespace tandem
