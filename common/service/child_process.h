// Child processes (tandem up, integration tests): start with argv, log to a file, wait for a
// ready file, signal, reap. Every wait has a deadline; the destructor SIGKILLs and reaps.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace tandem {

class ChildProcess {
 public:
  // Starts argv[0] with stdout and stderr appended to `log_path`.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(std::vector<std::string> argv,
                                                        const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Sends `signal` (SIGKILL, SIGTERM, ...) if still running.
  void Signal(int signal);
  // Exit code (128 + signal when killed), or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  bool Running();
  const std::string& log_path() const { return log_path_; }
  // The last `max_bytes` of the log, for failure messages.
  std::string LogTail(size_t max_bytes = 4000) const;

 private:
  ChildProcess(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  std::string log_path_;
  bool reaped_ = false;
  int exit_code_ = -1;
};

// Waits until `path` holds a JSON object (written atomically by the server once ready).
// Fails early, with the log tail, if `process` exits first.
absl::StatusOr<nlohmann::json> WaitForReadyFile(const std::string& path, ChildProcess& process,
                                                absl::Duration timeout);

}  // namespace tandem
