#include "tests/testing/fixtures.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/mapped_file.h"
#include "gtest/gtest.h"

namespace tandem::testing {

std::string FixturePath(const std::string& relative) {
  // The compiled-in path is this checkout's; TANDEM_FIXTURES_DIR overrides it where the test
  // binaries run from another copy of the tree (the GPU machine).
  const char* override_dir = std::getenv("TANDEM_FIXTURES_DIR");
  std::string root = override_dir != nullptr && *override_dir != '\0' ? override_dir
                                                                       : TANDEM_FIXTURES_DIR;
  return root + "/" + relative;
}

nlohmann::json ReadJsonFixture(const std::string& relative) {
  absl::StatusOr<std::string> text = ReadTextFile(FixturePath(relative));
  if (!text.ok()) {
    ADD_FAILURE() << text.status();
    return nullptr;
  }
  nlohmann::json parsed = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) ADD_FAILURE() << "bad JSON in fixture " << relative;
  return parsed;
}

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::filesystem::path root = base ? base : std::filesystem::temp_directory_path();
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string unique = info ? std::string(info->test_suite_name()) + "." + info->name() : "t";
  std::filesystem::path dir =
      root / ("tandem-" + std::to_string(::getpid()) + "-" + unique + "-" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, std::string_view contents) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
}

}  // namespace tandem::testing
