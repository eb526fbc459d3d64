// Paths to and readers of the committed fixtures in tests/fixtures/ (made by tools/).
#pragma once

#include <string>

#include "nlohmann/json.hpp"

namespace tandem::testing {

// Absolute path of `relative` under tests/fixtures, e.g. "models/llama3-tiny".
std::string FixturePath(const std::string& relative);

// Parses a JSON fixture file; fails the calling test (ADD_FAILURE) and returns null on error.
nlohmann::json ReadJsonFixture(const std::string& relative);

// A fresh empty directory under the test's temp dir, removed by the test runner's cleanup.
std::string MakeTempDir(const std::string& name);

// Writes `contents` to `path` (creating parent directories).
void WriteFile(const std::string& path, std::string_view contents);

}  // namespace tandem::testing
