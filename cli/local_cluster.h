// A whole tandem cluster on this machine: N prefill + M decode worker processes and a
// router, each started from its binary, waited for (ready files, every wait with a
// deadline), and stopped cleanly (SIGTERM, then SIGKILL after a grace period).
// Used by `tandem up` and by the integration tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/service/child_process.h"
#include "nlohmann/json.hpp"

namespace tandem::cli {

struct LocalClusterOptions {
  std::string bin_dir;                 // where the server binaries are; empty: FindBinary
  std::string model_dir;
  int num_prefill = 1;
  int num_decode = 1;
  std::string router_listen = "127.0.0.1:8000";
  std::vector<std::string> worker_flags;   // appended to every worker's argv
  // --backend=cuda: prefill worker i gets --device=prefill_devices[i % size] (likewise
  // decode); empty: no --device flag is added (worker_flags may carry one).
  std::vector<int> prefill_devices, decode_devices;
  std::vector<std::string> router_flags;   // appended to the router's argv
  std::string log_dir;                 // logs and ready files (created)
  absl::Duration ready_timeout = absl::Seconds(120);
};

struct ClusterMember {
  std::string name;
  std::vector<std::string> argv;
  std::string ready_file;
  std::unique_ptr<ChildProcess> process;
  nlohmann::json ready;  // {"grpc", "kv", "name", "incarnation", "pid"}
  std::string grpc_address() const { return ready.value("grpc", ""); }
};

// The --kv_transport every worker of a local cluster gets. "auto" means NCCL between
// different GPUs, but NCCL cannot pair a GPU with itself: with --backend=cuda and prefill
// workers sharing a device with decode workers (the default: every worker on --device),
// auto resolves to "tcp" for the whole cluster. Anything else is passed through.
std::string ClusterKvTransport(const std::string& requested, bool cuda, int num_prefill,
                               int default_device, const std::vector<int>& prefill_devices,
                               const std::vector<int>& decode_devices);

// Finds `name` (e.g. "tandem-router"): in `hint` if given, else next to this executable, else
// in the build tree's <folder>/ beside this executable's folder.
absl::StatusOr<std::string> FindBinary(const std::string& name, const std::string& hint);

class LocalCluster {
 public:
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(LocalClusterOptions options);
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // SIGTERM to the router, then the workers; SIGKILL whatever still runs after `grace`.
  void Stop(absl::Duration grace = absl::Seconds(10));
  std::string router_address() const { return router_.grpc_address(); }
  ClusterMember& prefill(int i) { return prefill_[i]; }
  ClusterMember& decode(int i) { return decode_[i]; }
  ClusterMember& router() { return router_; }
  // Starts a stopped or killed member again on the same addresses (a new incarnation).
  absl::Status Restart(ClusterMember& member);

 private:
  LocalCluster() = default;
  absl::Status StartMember(ClusterMember& member);

  LocalClusterOptions options_;
  std::vector<ClusterMember> prefill_, decode_;
  ClusterMember router_;
};

}  // namespace tandem::cli
