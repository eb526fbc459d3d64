// `tandem up` as a user runs it: a whole local cluster of real processes, streamed from by
// `tandem generate --server`, loaded by `tandem bench`, stopped cleanly by Ctrl-C.
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>

#include "common/service/child_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

// Runs the tandem binary to completion; returns (exit code, stdout).
std::pair<int, std::string> RunTandem(const std::vector<std::string>& args,
                                      const std::string& dir) {
  std::vector<std::string> argv = {TANDEM_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out_path = dir + "/out-" + std::to_string(::rand()) + ".log";
  auto child = ChildProcess::Start(argv, out_path);
  EXPECT_TRUE(child.ok());
  absl::StatusOr<int> code = (*child)->Wait(absl::Seconds(120));
  std::ifstream in(out_path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return {code.ok() ? *code : -1, text};
}

TEST(TandemUpTest, ClusterServesGeneratesBenchmarksAndStopsOnCtrlC) {
  std::string dir = testing::MakeTempDir("up");
  auto up = ChildProcess::Start({TANDEM_BINARY, "up", "--listen=127.0.0.1:0",
                                 "--ready_file=" + dir + "/up.ready", "--log_dir=" + dir + "/logs",
                                 "--num_kv_blocks=256"},
                                dir + "/up.log");
  ASSERT_TRUE(up.ok());
  auto ready = WaitForReadyFile(dir + "/up.ready", **up, absl::Seconds(120));
  ASSERT_TRUE(ready.ok()) << ready.status();
  std::string server = (*ready)["grpc"];

  nlohmann::json golden = testing::ReadJsonFixture("models/llama3-tiny/golden.json");
  std::string prompt = golden["prompts"][0]["text"];
  // stdout and stderr share the log: the completion is on the first line(s), stats after.
  auto [code, out] = RunTandem({"generate", "--server=" + server, "--prompt=" + prompt,
                                "--max_tokens=32", "--ignore_eos"}, dir);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr(prompt + golden["prompts"][0]["greedy_text"].get<std::string>() + "\n"));

  auto [bench_code, report] =
      RunTandem({"bench", "--server=" + server, "--requests=20", "--concurrency=4",
                 "--prompt_len=8:32", "--output_len=8", "--json_out=" + dir + "/bench.json"}, dir);
  EXPECT_EQ(bench_code, 0) << report;
  std::ifstream bench_file(dir + "/bench.json");
  nlohmann::json bench = nlohmann::json::parse(bench_file, nullptr, false);
  ASSERT_FALSE(bench.is_discarded()) << report;
  EXPECT_EQ(bench["statusCodeDistribution"], (nlohmann::json{{"OK", 20}}));
  EXPECT_GT(bench["output_tokens_per_s"].get<double>(), 0.0);

  std::vector<int> worker_pids;
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/logs")) {
    if (entry.path().extension() != ".ready") continue;
    std::ifstream f(entry.path());
    worker_pids.push_back(nlohmann::json::parse(f)["pid"].get<int>());
  }
  EXPECT_EQ(worker_pids.size(), 3u);  // router, prefill-0, decode-0
  (*up)->Signal(SIGINT);
  absl::StatusOr<int> up_code = (*up)->Wait(absl::Seconds(30));
  ASSERT_TRUE(up_code.ok()) << (*up)->LogTail();
  EXPECT_EQ(*up_code, 0) << (*up)->LogTail();
  for (int pid : worker_pids) EXPECT_NE(::kill(pid, 0), 0) << "pid " << pid << " still alive";
}

}  // namespace
}  // namespace tandem
