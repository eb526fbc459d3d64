// RAII owners of CUDA resources. Each is move-only; the destructor releases the resource
// (and aborts if the driver reports an error there, which means earlier work failed).
// Creation that the world can refuse (out of memory) returns absl::StatusOr.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/statusor.h"

namespace tandem {

class CudaStream {
 public:
  static absl::StatusOr<CudaStream> Create();  // non-blocking stream on the current device
  // The same, `levels_above_lowest` scheduling priority levels above the default (lowest)
  // one, clamped to the device's range (an H100/H200 has 6 levels): the block scheduler
  // starts a kernel's blocks before pending blocks of lower-priority streams (the KV
  // transfer's NCCL stream above its copy kernels, both above a forward pass).
  static absl::StatusOr<CudaStream> CreateWithPriority(int levels_above_lowest);
  CudaStream() = default;
  CudaStream(CudaStream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  CudaStream& operator=(CudaStream&& other) noexcept;
  ~CudaStream();

  cudaStream_t get() const { return stream_; }
  void Synchronize() const;  // aborts on a sticky CUDA error

 private:
  explicit CudaStream(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_ = nullptr;
};

class CudaEvent {
 public:
  static absl::StatusOr<CudaEvent> Create();  // with timing enabled
  static absl::StatusOr<CudaEvent> CreateWithoutTiming();  // cheaper to record and wait on
  CudaEvent() = default;
  CudaEvent(CudaEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& other) noexcept;
  ~CudaEvent();

  cudaEvent_t get() const { return event_; }
  void Record(cudaStream_t stream) const;
  void Synchronize() const;
  // Milliseconds between `start` and this event (both recorded and complete).
  float ElapsedMsSince(const CudaEvent& start) const;

 private:
  explicit CudaEvent(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_ = nullptr;
};

// Device memory from cudaMalloc. size_bytes() == 0 holds no allocation.
class DeviceBuffer {
 public:
  static absl::StatusOr<DeviceBuffer> Allocate(size_t size_bytes);
  // Managed memory (cudaMallocManaged) that lives on `device` but that host code may also
  // read and write (pages migrate on touch); needs concurrent managed access, else
  // FAILED_PRECONDITION. Freed the same way (cudaFree).
  static absl::StatusOr<DeviceBuffer> AllocateManaged(size_t size_bytes, int device);
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_bytes_(std::exchange(other.size_bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  ~DeviceBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size_bytes() const { return size_bytes_; }

 private:
  DeviceBuffer(void* data, size_t size_bytes) : data_(data), size_bytes_(size_bytes) {}
  void* data_ = nullptr;
  size_t size_bytes_ = 0;
};

// Page-locked host memory (cudaMallocHost), for asynchronous copies.
class PinnedBuffer {
 public:
  static absl::StatusOr<PinnedBuffer> Allocate(size_t size_bytes);
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_bytes_(std::exchange(other.size_bytes_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  ~PinnedBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size_bytes() const { return size_bytes_; }

 private:
  PinnedBuffer(void* data, size_t size_bytes) : data_(data), size_bytes_(size_bytes) {}
  void* data_ = nullptr;
  size_t size_bytes_ = 0;
};

// An instantiated CUDA graph (cudaGraphExec_t). Capture(): work issued on `stream` by
// `issue` is captured (not run), then instantiated; a failure ends the capture first.
class CudaGraphExec {
 public:
  template <typename Issue>
  static absl::StatusOr<CudaGraphExec> Capture(cudaStream_t stream, Issue&& issue);
  CudaGraphExec() = default;
  CudaGraphExec(CudaGraphExec&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  CudaGraphExec& operator=(CudaGraphExec&& other) noexcept;
  ~CudaGraphExec();

  cudaGraphExec_t get() const { return exec_; }
  absl::Status Launch(cudaStream_t stream) const;

 private:
  static absl::Status BeginCapture(cudaStream_t stream);
  // Ends the capture; instantiates when `issued` is ok.
  static absl::StatusOr<CudaGraphExec> EndCapture(cudaStream_t stream, absl::Status issued);
  explicit CudaGraphExec(cudaGraphExec_t exec) : exec_(exec) {}
  cudaGraphExec_t exec_ = nullptr;
};

template <typename Issue>
absl::StatusOr<CudaGraphExec> CudaGraphExec::Capture(cudaStream_t stream, Issue&& issue) {
  absl::Status begun = BeginCapture(stream);
  if (!begun.ok()) return begun;
  return EndCapture(stream, issue());
}

class CublasLtHandle {
 public:
  static absl::StatusOr<CublasLtHandle> Create();
  CublasLtHandle() = default;
  CublasLtHandle(CublasLtHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  CublasLtHandle& operator=(CublasLtHandle&& other) noexcept;
  ~CublasLtHandle();

  cublasLtHandle_t get() const { return handle_; }

 private:
  explicit CublasLtHandle(cublasLtHandle_t handle) : handle_(handle) {}
  cublasLtHandle_t handle_ = nullptr;
};

}  // namespace tandem
