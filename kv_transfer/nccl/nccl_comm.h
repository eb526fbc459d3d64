// An owned NCCL communicator, created non-blocking so that a peer that never joins (dead,
// frozen) costs a deadline instead of a hang, and torn down with ncclCommAbort, which never
// waits for the peer: every path that drops a communicator (error, timeout, eviction from the
// pool, normal shutdown) goes through the destructor.
#pragma once

#include <string>

#include <nccl.h>

#include <cuda_runtime.h>

#include <functional>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tandem {

// UNAVAILABLE naming `what` and NCCL's error text (remote errors, system errors); INTERNAL
// for our own misuse (invalid argument/usage).
absl::Status NcclErrorToStatus(ncclResult_t result, const char* what);

// Sets NCCL_NVLS_ENABLE=0 unless the environment already says otherwise: NVLink multicast
// is never used by KV transfer and must stay off on shared hosts.
void DisableNcclMulticastUnlessSet();

// CUDA device `device`'s UUID as 32 hex digits ("" if it cannot be read): which physical
// GPU a process uses, whatever CUDA_VISIBLE_DEVICES calls it.
std::string GpuUuid(int device);

// Checked about once a millisecond while a wait below polls: a non-OK answer ends the wait
// with that status (a closed control connection, a stopping owner).
using WaitCheck = std::function<absl::Status()>;

// Polls `event` (cudaEventQuery, never a blocking synchronize: a kernel stuck on a frozen
// peer must not hold the caller) until it completes, `check` fails, or `deadline` passes
// (DEADLINE_EXCEEDED naming `what`).
absl::Status WaitForEvent(cudaEvent_t event, absl::Time deadline, const char* what,
                          const WaitCheck& check = nullptr);

// Device memory for NCCL messages: from ncclMemAlloc (cuMem-backed, shareable between
// processes) when `registrable`, which NCCL needs to register a buffer (NcclComm::Register)
// so that sends and receives between GPUs of one host copy straight from the sender's
// buffer into the receiver's, without NCCL's intermediate FIFO; else plain cudaMalloc.
class NcclMemory {
 public:
  static absl::StatusOr<NcclMemory> Allocate(size_t size_bytes, bool registrable);
  NcclMemory() = default;
  NcclMemory(NcclMemory&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_bytes_(std::exchange(other.size_bytes_, 0)),
        registrable_(other.registrable_) {}
  NcclMemory& operator=(NcclMemory&& other) noexcept;
  ~NcclMemory();

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t size_bytes() const { return size_bytes_; }

 private:
  void Free();
  void* data_ = nullptr;
  size_t size_bytes_ = 0;
  bool registrable_ = false;
};

class NcclComm {
 public:
  static absl::StatusOr<ncclUniqueId> NewUniqueId();
  // Joins rank `rank` of a `world_size` communicator on the current CUDA device. Waits for
  // every rank until `deadline`; a communicator that is not ready by then is aborted and
  // DEADLINE_EXCEEDED returned. Created with splitShare, so SplitBlocking children reuse its
  // connections. `blocking` (benchmarks only) makes every NCCL call on it, init included,
  // wait inside NCCL with no deadline; the transport never asks for it.
  static absl::StatusOr<NcclComm> Create(int world_size, int rank, const ncclUniqueId& id,
                                         absl::Time deadline, bool blocking = false);

  // A blocking child of this non-blocking communicator (ncclCommSplit, every rank calls it):
  // the split itself runs asynchronously under the parent and is bounded by `deadline`; the
  // child shares the parent's resources and connections (connect them first with one
  // message on the parent, or the child's first call would connect inside NCCL with no
  // bound). Calls on the child cost microseconds; the non-blocking parent's cost a thread
  // start each. Abort the child before the parent.
  absl::StatusOr<NcclComm> SplitBlocking(absl::Time deadline) const;

  NcclComm() = default;
  NcclComm(NcclComm&& other) noexcept : comm_(std::exchange(other.comm_, nullptr)) {}
  NcclComm& operator=(NcclComm&& other) noexcept;
  ~NcclComm() { Abort(); }

  ncclComm_t get() const { return comm_; }
  bool valid() const { return comm_ != nullptr; }

  // The result of a call on this (non-blocking) communicator: OK once its host-side part has
  // finished (polling ncclCommGetAsyncError while it reports ncclInProgress), the error
  // otherwise, DEADLINE_EXCEEDED when `deadline` passes first, or what `check` answers
  // when it fails first. Each call on a non-blocking communicator costs NCCL a thread
  // start (tens of microseconds): callers keep messages few and large.
  absl::Status Finish(ncclResult_t result, const char* what, absl::Time deadline,
                      const WaitCheck& check = nullptr) const;
  // OK while the communicator has no asynchronous error (ncclInProgress counts as none).
  absl::Status AsyncError() const;
  // ncclCommAbort: frees the communicator and stops its kernels without the peer. Idempotent.
  void Abort();
  // Registers `buffer` (NcclMemory) with this communicator (ncclCommRegister, local): sends
  // and receives on it then copy directly when both sides' buffers are registered (NCCL
  // requires both or neither). The registration lives as long as the communicator; the
  // buffer must outlive it.
  absl::Status Register(void* buffer, size_t bytes);
  // Registers `buffer` (NcclMemory; `bytes` the same on every rank) as a symmetric window
  // (ncclCommWindowRegister, NCCL_WIN_COLL_SYMMETRIC): collective, every rank calls it, and
  // on this non-blocking communicator bounded by `deadline` and `check`. NCCL maps every
  // rank's buffer into each rank's address space (PeerPointer in kv_pack_kernels.h finds
  // the peer's). Lives as long as the communicator; the buffer must outlive it.
  absl::StatusOr<ncclWindow_t> RegisterWindow(void* buffer, size_t bytes, absl::Time deadline,
                                              const WaitCheck& check) const;

 private:
  explicit NcclComm(ncclComm_t comm) : comm_(comm) {}
  ncclComm_t comm_ = nullptr;
};

}  // namespace tandem
