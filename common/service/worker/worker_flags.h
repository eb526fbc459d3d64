// The command-line flags both worker binaries share (absl flags). Each binary's main parses
// them, adds its own (tandem-decode: --kv_listen), then validates the WorkerOptions.
#pragma once

#include "common/service/worker/worker_options.h"

namespace tandem {

// The shared flags' values (call after absl::ParseCommandLine).
WorkerOptions WorkerOptionsFromFlags();

}  // namespace tandem
