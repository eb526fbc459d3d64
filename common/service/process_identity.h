// What every tandem server process shares: its incarnation, its ready file, and a
// SIGTERM/SIGINT latch for graceful drain.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace tandem {

// A random non-zero id drawn once per process start: a restarted worker on the same address
// is a new incarnation, and peers drop what belonged to the old one.
uint64_t ProcessIncarnation();

// Writes `{"grpc": ..., "kv": ..., "name": ..., "incarnation": ...}` to `path` atomically
// (temp file + rename), so a reader never sees half a file. `kv_address` may be empty.
absl::Status WriteReadyFile(const std::string& path, const std::string& name,
                            const std::string& grpc_address, const std::string& kv_address);

// Installs SIGTERM/SIGINT handlers that set a flag (and nothing else). Call once in main.
void InstallShutdownSignalHandlers();
// Whether SIGTERM/SIGINT arrived.
bool ShutdownRequested();
// Sleeps until a shutdown signal arrives or `timeout` passes; returns ShutdownRequested().
bool WaitForShutdown(absl::Duration timeout);

}  // namespace tandem
