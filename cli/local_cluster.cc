#include "cli/local_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace tandem::cli {
namespace {

namespace fs = std::filesystem;

std::string SelfDir() {
  std::error_code error;
  fs::path self = fs::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : self.parent_path().string();
}

// Replaces (or appends) `--flag=value` in argv.
void SetFlag(std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  std::string prefix = "--" + flag + "=";
  for (std::string& a : argv) {
    if (a.rfind(prefix, 0) == 0) {
      a = prefix + value;
      return;
    }
  }
  argv.push_back(prefix + value);
}

}  // namespace

std::string ClusterKvTransport(const std::string& requested, bool cuda, int num_prefill,
                               int default_device, const std::vector<int>& prefill_devices,
                               const std::vector<int>& decode_devices) {
  if (requested != "auto" || !cuda || num_prefill == 0) return requested;
  const std::vector<int> fallback = {default_device};
  const std::vector<int>& prefill = prefill_devices.empty() ? fallback : prefill_devices;
  const std::vector<int>& decode = decode_devices.empty() ? fallback : decode_devices;
  for (int p : prefill) {
    for (int d : decode) {
      if (p == d) return "tcp";
    }
  }
  return requested;
}

absl::StatusOr<std::string> FindBinary(const std::string& name, const std::string& hint) {
  static const std::pair<const char*, const char*> kFolders[] = {
      {"tandem-router", "router"}, {"tandem-prefill", "prefill_worker"},
      {"tandem-decode", "decode_worker"}};
  std::vector<fs::path> candidates;
  if (!hint.empty()) candidates.push_back(fs::path(hint) / name);
  fs::path self = SelfDir();
  candidates.push_back(self / name);
  for (const auto& [binary, folder] : kFolders) {
    if (name == binary) candidates.push_back(self.parent_path() / folder / name);
  }
  for (const fs::path& c : candidates) {
    if (::access(c.c_str(), X_OK) == 0) return c.string();
  }
  std::vector<std::string> tried;
  for (const fs::path& c : candidates) tried.push_back(c.string());
  return absl::NotFoundError(absl::StrCat("cannot find ", name, " (tried ",
                                          absl::StrJoin(tried, ", "), "); pass --bin_dir"));
}

absl::Status LocalCluster::StartMember(ClusterMember& m) {
  std::error_code error;
  fs::remove(m.ready_file, error);
  std::string log = (fs::path(options_.log_dir) / (m.name + ".log")).string();
  TANDEM_ASSIGN_OR_RETURN(m.process, ChildProcess::Start(m.argv, log));
  TANDEM_ASSIGN_OR_RETURN(m.ready,
                          WaitForReadyFile(m.ready_file, *m.process, options_.ready_timeout));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(LocalClusterOptions options) {
  if (options.num_prefill < 0 || options.num_decode < 1) {
    return absl::InvalidArgumentError("a cluster needs num_decode >= 1 and num_prefill >= 0");
  }
  fs::create_directories(options.log_dir);
  std::unique_ptr<LocalCluster> cluster(new LocalCluster());
  cluster->options_ = options;
  TANDEM_ASSIGN_OR_RETURN(std::string prefill_bin, FindBinary("tandem-prefill", options.bin_dir));
  TANDEM_ASSIGN_OR_RETURN(std::string decode_bin, FindBinary("tandem-decode", options.bin_dir));
  TANDEM_ASSIGN_OR_RETURN(std::string router_bin, FindBinary("tandem-router", options.bin_dir));
  auto make_worker = [&](const std::string& binary, const std::string& name,
                         const std::vector<int>& devices, int index) {
    ClusterMember m{.name = name,
                    .argv = {binary, "--model=" + options.model_dir, "--name=" + name,
                             "--listen=127.0.0.1:0"},
                    .ready_file = (fs::path(options.log_dir) / (name + ".ready")).string()};
    if (binary == decode_bin) m.argv.push_back("--kv_listen=127.0.0.1:0");
    m.argv.push_back("--ready_file=" + m.ready_file);
    m.argv.insert(m.argv.end(), options.worker_flags.begin(), options.worker_flags.end());
    if (!devices.empty()) {
      SetFlag(m.argv, "device",
              absl::StrCat(devices[static_cast<size_t>(index) % devices.size()]));
    }
    return m;
  };
  for (int i = 0; i < options.num_prefill; ++i) {
    cluster->prefill_.push_back(make_worker(prefill_bin, absl::StrCat("prefill-", i),
                                                   options.prefill_devices, i));
  }
  for (int i = 0; i < options.num_decode; ++i) {
    cluster->decode_.push_back(make_worker(decode_bin, absl::StrCat("decode-", i),
                                                  options.decode_devices, i));
  }
  std::vector<std::string> prefill_addrs, decode_addrs;
  for (auto* group : {&cluster->prefill_, &cluster->decode_}) {
    for (ClusterMember& m : *group) {
      TANDEM_RETURN_IF_ERROR(cluster->StartMember(m));
      // Keep its addresses for restarts: a restarted worker is found where it was.
      SetFlag(m.argv, "listen", m.grpc_address());
      if (!m.ready.value("kv", "").empty()) SetFlag(m.argv, "kv_listen", m.ready["kv"]);
      (group == &cluster->prefill_ ? prefill_addrs : decode_addrs).push_back(m.grpc_address());
    }
  }
  ClusterMember& r = cluster->router_;
  r = {.name = "router",
       .argv = {router_bin, "--model=" + options.model_dir, "--listen=" + options.router_listen,
                "--prefill=" + absl::StrJoin(prefill_addrs, ","),
                "--decode=" + absl::StrJoin(decode_addrs, ",")},
       .ready_file = (fs::path(options.log_dir) / "router.ready").string()};
  r.argv.push_back("--ready_file=" + r.ready_file);
  r.argv.insert(r.argv.end(), options.router_flags.begin(), options.router_flags.end());
  TANDEM_RETURN_IF_ERROR(cluster->StartMember(r));
  SetFlag(r.argv, "listen", r.grpc_address());
  return cluster;
}

absl::Status LocalCluster::Restart(ClusterMember& member) {
  if (member.process && member.process->Running()) {
    return absl::FailedPreconditionError(absl::StrCat(member.name, " is still running"));
  }
  return StartMember(member);
}

void LocalCluster::Stop(absl::Duration grace) {
  std::vector<ClusterMember*> order = {&router_};
  for (ClusterMember& m : prefill_) order.push_back(&m);
  for (ClusterMember& m : decode_) order.push_back(&m);
  for (ClusterMember* m : order) {
    if (m->process) m->process->Signal(SIGTERM);
  }
  absl::Time deadline = absl::Now() + grace;
  for (ClusterMember* m : order) {
    if (!m->process) continue;
    if (!m->process->Wait(std::max(deadline - absl::Now(), absl::ZeroDuration())).ok()) {
      m->process->Signal(SIGKILL);
      (void)m->process->Wait(absl::Seconds(5));
    }
  }
}

LocalCluster::~LocalCluster() { Stop(absl::Seconds(5)); }

}  // namespace tandem::cli
