// Real child processes for integration tests: the production launcher (common/service),
// under the names tests use.
#pragma once

#include "common/service/child_process.h"

namespace tandem::testing {

using Process = ::tandem::ChildProcess;
using ::tandem::WaitForReadyFile;

}  // namespace tandem::testing
