#include "kv_transfer/nccl/nccl_comm.h"

#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem {

absl::Status NcclErrorToStatus(ncclResult_t result, const char* what) {
  std::string message = absl::StrCat(what, ": ", ncclGetErrorString(result));
  if (result == ncclInvalidArgument || result == ncclInvalidUsage) {
    return absl::InternalError(message);
  }
  return absl::UnavailableError(message);
}

void DisableNcclMulticastUnlessSet() { setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0); }

absl::StatusOr<ncclUniqueId> NcclComm::NewUniqueId() {
  DisableNcclMulticastUnlessSet();
  ncclUniqueId id;
  ncclResult_t result = ncclGetUniqueId(&id);
  if (result != ncclSuccess) return NcclErrorToStatus(result, "ncclGetUniqueId");
  return id;
}

absl::StatusOr<NcclComm> NcclComm::Create(int world_size, int rank, const ncclUniqueId& id,
                                          absl::Time deadline, bool blocking) {
  DisableNcclMulticastUnlessSet();
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = blocking ? 1 : 0;
  config.splitShare = 1;  // SplitBlocking children reuse this communicator's connections
  ncclComm_t raw = nullptr;
  ncclResult_t result = ncclCommInitRankConfig(&raw, world_size, id, rank, &config);
  NcclComm comm(raw);  // aborted on every early return below
  if (result != ncclSuccess && result != ncclInProgress) {
    return NcclErrorToStatus(result, "ncclCommInitRankConfig");
  }
  if (raw == nullptr) return absl::InternalError("ncclCommInitRankConfig gave no communicator");
  absl::Status ready = comm.Finish(result, "ncclCommInitRankConfig", deadline);
  if (!ready.ok()) return ready;
  return comm;
}

absl::StatusOr<NcclComm> NcclComm::SplitBlocking(absl::Time deadline) const {
  int rank = 0;
  ncclResult_t result = ncclCommUserRank(comm_, &rank);
  if (result != ncclSuccess) return NcclErrorToStatus(result, "ncclCommUserRank");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 1;
  // The split job writes the child here when it completes, possibly after a timeout below
  // returned: a heap slot that is leaked (8 bytes) rather than a dangling stack address.
  auto* child = new ncclComm_t(nullptr);
  result = ncclCommSplit(comm_, /*color=*/0, /*key=*/rank, child, &config);
  absl::Status done = Finish(result, "ncclCommSplit", deadline);
  if (!done.ok()) return done;  // the caller aborts the parent, which stops the split
  if (*child == nullptr) {
    delete child;
    return absl::InternalError("ncclCommSplit gave no communicator");
  }
  NcclComm split(*child);
  delete child;
  TANDEM_RETURN_IF_ERROR(split.AsyncError());
  return split;
}

NcclComm& NcclComm::operator=(NcclComm&& other) noexcept {
  if (this != &other) {
    Abort();
    comm_ = std::exchange(other.comm_, nullptr);
  }
  return *this;
}

std::string GpuUuid(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char byte : prop.uuid.bytes) {
    const unsigned char b = static_cast<unsigned char>(byte);
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::Status WaitForEvent(cudaEvent_t event, absl::Time deadline, const char* what,
                          const WaitCheck& check) {
  const absl::Time start = absl::Now();
  absl::Time next_check = start;
  int64_t spins = 0;
  while (true) {
    cudaError_t query = cudaEventQuery(event);
    if (query == cudaSuccess) return absl::OkStatus();
    if (query != cudaErrorNotReady) {
      return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(query)));
    }
    absl::Time now = absl::Now();
    if (now >= next_check) {
      next_check = now + absl::Milliseconds(1);
      if (check) {
        absl::Status checked = check();
        if (!checked.ok()) return checked;
      }
      if (now >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(what, " did not finish before its deadline"));
      }
    }
    // Yield for the first few milliseconds (a chunk lands within them; a 20 us sleep
    // really lasts ~70 us with the default timer slack, on the critical path of every
    // chunk), then sleep between queries.
    if (++spins > 2000 && now - start > absl::Milliseconds(5)) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    } else {
      std::this_thread::yield();
    }
  }
}

absl::Status NcclComm::Finish(ncclResult_t result, const char* what, absl::Time deadline,
                              const WaitCheck& check) const {
  if (result != ncclSuccess && result != ncclInProgress) return NcclErrorToStatus(result, what);
  int spins = 0;
  absl::Time next_check = absl::Now() + absl::Milliseconds(1);
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
    if (queried != ncclSuccess) return NcclErrorToStatus(queried, "ncclCommGetAsyncError");
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return NcclErrorToStatus(state, what);
    absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(what, " did not finish before its deadline"));
    }
    if (check && now >= next_check) {
      next_check = now + absl::Milliseconds(1);
      absl::Status checked = check();
      if (!checked.ok()) return checked;
    }
    // A non-blocking communicator answers ncclInProgress for ordinary sends and receives
    // too: spin (yielding) so each call costs microseconds, sleep only for slow ones (init).
    if (++spins > 20000) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else {
      std::this_thread::yield();
    }
  }
}

absl::Status NcclComm::AsyncError() const {
  ncclResult_t state = ncclSuccess;
  ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
  if (queried != ncclSuccess) return NcclErrorToStatus(queried, "ncclCommGetAsyncError");
  if (state == ncclSuccess || state == ncclInProgress) return absl::OkStatus();
  return NcclErrorToStatus(state, "nccl communicator");
}

absl::StatusOr<NcclMemory> NcclMemory::Allocate(size_t size_bytes, bool registrable) {
  NcclMemory memory;
  memory.registrable_ = registrable;
  if (registrable) {
    ncclResult_t r = ncclMemAlloc(&memory.data_, size_bytes);
    if (r != ncclSuccess) return NcclErrorToStatus(r, "ncclMemAlloc");
  } else {
    cudaError_t e = cudaMalloc(&memory.data_, size_bytes);
    if (e != cudaSuccess) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cudaMalloc of ", size_bytes, " bytes: ", cudaGetErrorString(e)));
    }
  }
  memory.size_bytes_ = size_bytes;
  return memory;
}

void NcclMemory::Free() {
  if (data_ == nullptr) return;
  if (registrable_) {
    ncclMemFree(data_);
  } else {
    cudaFree(data_);
  }
  data_ = nullptr;
}

NcclMemory& NcclMemory::operator=(NcclMemory&& other) noexcept {
  if (this != &other) {
    Free();
    data_ = std::exchange(other.data_, nullptr);
    size_bytes_ = std::exchange(other.size_bytes_, 0);
    registrable_ = other.registrable_;
  }
  return *this;
}

NcclMemory::~NcclMemory() { Free(); }

absl::Status NcclComm::Register(void* buffer, size_t bytes) {
  void* handle = nullptr;  // released with the communicator (ncclCommAbort frees it)
  ncclResult_t r = ncclCommRegister(comm_, buffer, bytes, &handle);
  if (r != ncclSuccess && r != ncclInProgress) return NcclErrorToStatus(r, "ncclCommRegister");
  return Finish(r, "ncclCommRegister", absl::Now() + absl::Seconds(10));
}

absl::StatusOr<ncclWindow_t> NcclComm::RegisterWindow(void* buffer, size_t bytes,
                                                      absl::Time deadline,
                                                      const WaitCheck& check) const {
  ncclWindow_t window = nullptr;
  ncclResult_t r = ncclCommWindowRegister(comm_, buffer, bytes, &window, NCCL_WIN_COLL_SYMMETRIC);
  if (r != ncclSuccess && r != ncclInProgress) {
    return NcclErrorToStatus(r, "ncclCommWindowRegister");
  }
  TANDEM_RETURN_IF_ERROR(Finish(r, "ncclCommWindowRegister", deadline, check));
  if (window == nullptr) {
    return absl::UnavailableError("ncclCommWindowRegister returned no window (unsupported here)");
  }
  return window;
}

void NcclComm::Abort() {
  if (comm_ == nullptr) return;
  ncclCommAbort(std::exchange(comm_, nullptr));  // nothing useful to do with a failure here
}

}  // namespace tandem
