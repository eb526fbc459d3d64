#include "common/backend/cuda/cuda_handles.h"

#include "common/backend/cuda/cuda_check.h"

#include <algorithm>

namespace tandem {

absl::StatusOr<CudaStream> CudaStream::Create() {
  cudaStream_t stream = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return CudaStream(stream);
}

absl::StatusOr<CudaStream> CudaStream::CreateWithPriority(int levels_above_lowest) {
  int least = 0, greatest = 0;  // numerically lower is higher priority
  TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  const int priority = std::max(greatest, least - std::max(0, levels_above_lowest));
  cudaStream_t stream = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, priority));
  return CudaStream(stream);
}

CudaStream& CudaStream::operator=(CudaStream&& other) noexcept {
  if (this != &other) {
    this->~CudaStream();
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

CudaStream::~CudaStream() {
  if (stream_ != nullptr) TANDEM_CUDA_CHECK(cudaStreamDestroy(stream_));
}

void CudaStream::Synchronize() const { TANDEM_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

absl::StatusOr<CudaEvent> CudaEvent::Create() {
  cudaEvent_t event = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventCreate(&event));
  return CudaEvent(event);
}

absl::StatusOr<CudaEvent> CudaEvent::CreateWithoutTiming() {
  cudaEvent_t event = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return CudaEvent(event);
}

CudaEvent& CudaEvent::operator=(CudaEvent&& other) noexcept {
  if (this != &other) {
    this->~CudaEvent();
    event_ = std::exchange(other.event_, nullptr);
  }
  return *this;
}

CudaEvent::~CudaEvent() {
  if (event_ != nullptr) TANDEM_CUDA_CHECK(cudaEventDestroy(event_));
}

void CudaEvent::Record(cudaStream_t stream) const {
  TANDEM_CUDA_CHECK(cudaEventRecord(event_, stream));
}

void CudaEvent::Synchronize() const { TANDEM_CUDA_CHECK(cudaEventSynchronize(event_)); }

float CudaEvent::ElapsedMsSince(const CudaEvent& start) const {
  float ms = 0.0f;
  TANDEM_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::AllocateManaged(size_t size_bytes, int device) {
  if (size_bytes == 0) return DeviceBuffer();
  int concurrent = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, device));
  if (concurrent == 0) {
    return absl::FailedPreconditionError(
        "device has no concurrent managed access: host-visible KV memory is unavailable");
  }
  void* data = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocManaged(&data, size_bytes, cudaMemAttachGlobal));
  DeviceBuffer buffer(data, size_bytes);  // owns it from here on
  cudaMemLocation location{.type = cudaMemLocationTypeDevice, .id = device};
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaMemAdvise(data, size_bytes, cudaMemAdviseSetPreferredLocation, location));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemAdvise(data, size_bytes, cudaMemAdviseSetAccessedBy, location));
  // Populate it on the device now, so kernels do not fault pages in one by one later.
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemPrefetchAsync(data, size_bytes, location, 0, nullptr));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return buffer;
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t size_bytes) {
  if (size_bytes == 0) return DeviceBuffer();
  void* data = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMalloc(&data, size_bytes));
  return DeviceBuffer(data, size_bytes);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    this->~DeviceBuffer();
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) TANDEM_CUDA_CHECK(cudaFree(data_));
}

absl::StatusOr<PinnedBuffer> PinnedBuffer::Allocate(size_t size_bytes) {
  if (size_bytes == 0) return PinnedBuffer();
  void* data = nullptr;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocHost(&data, size_bytes));
  return PinnedBuffer(data, size_bytes);
}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    this->~PinnedBuffer();
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (data_ != nullptr) TANDEM_CUDA_CHECK(cudaFreeHost(data_));
}

absl::Status CudaGraphExec::BeginCapture(cudaStream_t stream) {
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  return absl::OkStatus();
}

absl::StatusOr<CudaGraphExec> CudaGraphExec::EndCapture(cudaStream_t stream,
                                                        absl::Status issued) {
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (!issued.ok()) {
    if (graph != nullptr) TANDEM_CUDA_CHECK(cudaGraphDestroy(graph));
    cudaGetLastError();  // a launch refused during capture leaves no sticky error
    return issued;
  }
  TANDEM_CUDA_RETURN_IF_ERROR(ended);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
  TANDEM_CUDA_CHECK(cudaGraphDestroy(graph));
  TANDEM_CUDA_RETURN_IF_ERROR(instantiated);
  return CudaGraphExec(exec);
}

CudaGraphExec& CudaGraphExec::operator=(CudaGraphExec&& other) noexcept {
  if (this != &other) {
    this->~CudaGraphExec();
    exec_ = std::exchange(other.exec_, nullptr);
  }
  return *this;
}

CudaGraphExec::~CudaGraphExec() {
  if (exec_ != nullptr) TANDEM_CUDA_CHECK(cudaGraphExecDestroy(exec_));
}

absl::Status CudaGraphExec::Launch(cudaStream_t stream) const {
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, stream));
  return absl::OkStatus();
}

absl::StatusOr<CublasLtHandle> CublasLtHandle::Create() {
  cublasLtHandle_t handle = nullptr;
  TANDEM_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  return CublasLtHandle(handle);
}

CublasLtHandle& CublasLtHandle::operator=(CublasLtHandle&& other) noexcept {
  if (this != &other) {
    this->~CublasLtHandle();
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

CublasLtHandle::~CublasLtHandle() {
  if (handle_ != nullptr) TANDEM_CUBLAS_CHECK(cublasLtDestroy(handle_));
}

}  // namespace tandem
