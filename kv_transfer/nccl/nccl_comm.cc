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
                                          absl::Time deadline) {
  DisableNcclMulticastUnlessSet();
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
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

absl::Status NcclComm::Finish(ncclResult_t result, const char* what, absl::Time deadline) const {
  if (result != ncclSuccess && result != ncclInProgress) return NcclErrorToStatus(result, what);
  int spins = 0;
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
    if (queried != ncclSuccess) return NcclErrorToStatus(queried, "ncclCommGetAsyncError");
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) return NcclErrorToStatus(state, what);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(what, " did not finish before its deadline"));
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
