#include "common/service/process_identity.h"

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

volatile std::sig_atomic_t g_shutdown = 0;  // written only by the signal handler

void OnSignal(int) { g_shutdown = 1; }

}  // namespace

uint64_t ProcessIncarnation() {
  static const uint64_t incarnation = [] {
    std::random_device device;
    uint64_t value = 0;
    while (value == 0) value = (uint64_t{device()} << 32) ^ device();
    return value;
  }();
  return incarnation;
}

absl::Status WriteReadyFile(const std::string& path, const std::string& name,
                            const std::string& grpc_address, const std::string& kv_address) {
  nlohmann::json ready = {{"name", name},
                          {"grpc", grpc_address},
                          {"kv", kv_address},
                          {"incarnation", ProcessIncarnation()},
                          {"pid", ::getpid()}};
  std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << ready.dump() << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ready file ", temp));
  }
  std::error_code error;
  std::filesystem::rename(temp, path, error);
  if (error) return absl::InternalError(absl::StrCat("cannot rename ", temp, ": ", error.message()));
  return absl::OkStatus();
}

void InstallShutdownSignalHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

bool ShutdownRequested() { return g_shutdown != 0; }

bool WaitForShutdown(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (!ShutdownRequested() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  return ShutdownRequested();
}

}  // namespace tandem
