#include "kv_transfer/nccl/nccl_comm.h"

#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"

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

NcclComm& NcclComm::operator=(NcclComm&& other) noexcept {
  if (this != &other) {
    Abort();
    comm_ = std::exchange(other.comm_, nullptr);
  }
  return *this;
}

absl::Status WaitForEvent(cudaEvent_t event, absl::Time deadline, const char* what,
                          const WaitCheck& check) {
  absl::Time next_check = absl::Now();
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
    if (++spins > 2000) std::this_thread::sleep_for(std::chrono::microseconds(20));
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

void NcclComm::Abort() {
  if (comm_ == nullptr) return;
  ncclCommAbort(std::exchange(comm_, nullptr));  // nothing useful to do with a failure here
}

}  // namespace tandem
