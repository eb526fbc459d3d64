// Helpers for the GPU tests: device arrays, random bf16 inputs (never zero), poisoned
// outputs and error norms.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <span>
#include <vector>

#include "common/backend/cuda/bf16_host.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_handles.h"
#include "gtest/gtest.h"

namespace tandem::testing {

// A device copy of a host vector; Download() copies it back.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(std::span<const T> host) : size_(host.size()) {
    buffer_ = *DeviceBuffer::Allocate(std::max<size_t>(1, size_) * sizeof(T));
    TANDEM_CUDA_CHECK(cudaMemcpy(buffer_.data(), host.data(), size_ * sizeof(T),
                                 cudaMemcpyHostToDevice));
  }
  // `size` elements filled with 0xff bytes (NaN as bf16 and fp32): unwritten outputs show.
  static DeviceArray Poisoned(size_t size) {
    DeviceArray array{std::vector<T>(size)};
    TANDEM_CUDA_CHECK(cudaMemset(array.buffer_.data(), 0xff, std::max<size_t>(1, size) * sizeof(T)));
    return array;
  }
  T* get() const { return buffer_.as<T>(); }
  std::vector<T> Download() const {
    TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> host(size_);
    TANDEM_CUDA_CHECK(cudaMemcpy(host.data(), buffer_.data(), size_ * sizeof(T),
                                 cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  size_t size_;
  DeviceBuffer buffer_;
};

// bf16 patterns of random values in ±[0.05, 1) * scale: never zero.
inline std::vector<uint16_t> RandomBf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> magnitude(0.05f, 1.0f);
  std::bernoulli_distribution negative(0.5);
  std::vector<uint16_t> out(n);
  for (uint16_t& v : out) v = FloatToBf16((negative(rng) ? -1.0f : 1.0f) * magnitude(rng) * scale);
  return out;
}

inline std::vector<float> Widen(std::span<const uint16_t> bf16) {
  std::vector<float> out(bf16.size());
  Bf16ToFloats(bf16, out);
  return out;
}

// The kernel tests' bounds on RelativeError: bf16 outputs, fp32 paths.
constexpr double kBf16Tolerance = 1e-2;
constexpr double kF32Tolerance = 1e-4;

// A bf16 device result as floats.
inline std::vector<float> Bf16Result(const DeviceArray<uint16_t>& array) {
  return Widen(array.Download());
}

inline const __nv_bfloat16* AsBf16(const uint16_t* p) {
  return reinterpret_cast<const __nv_bfloat16*>(p);
}

// ||got - want|| / ||want||; infinity when any value of `got` is not finite.
inline double RelativeError(std::span<const float> got, std::span<const float> want) {
  EXPECT_EQ(got.size(), want.size());
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    norm += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess) << "no CUDA device (gpu tests need one)";
    ASSERT_GT(count, 0);
    // Fresh inputs every run; the seed is printed so a failure can be replayed.
    seed_ = std::random_device{}();
    rng_.seed(seed_);
    std::cout << "seed " << seed_ << "\n";
  }
  uint32_t seed_ = 0;
  std::mt19937 rng_;
};

}  // namespace tandem::testing
