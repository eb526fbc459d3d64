// `tandem generate` as a real process: its streamed output equals the transformers
// reference, and bad flags get a clear error and exit code 2.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

struct Result {
  int exit_code = -1;
  std::string out, err;
};

std::string Quote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

Result RunTandem(const std::vector<std::string>& args) {
  std::string err_path = testing::MakeTempDir("cli") + "/stderr";
  std::string command = Quote(TANDEM_BINARY);
  for (const std::string& a : args) command += " " + Quote(a);
  command += " 2>" + Quote(err_path);
  Result r;
  FILE* pipe = ::popen(command.c_str(), "r");
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0;) r.out.append(buffer, n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path);
  std::stringstream ss;
  ss << err.rdbuf();
  r.err = ss.str();
  return r;
}

TEST(GenerateCliTest, GreedyCompletionMatchesReference) {
  nlohmann::json golden = testing::ReadJsonFixture("models/llama3-tiny/golden.json");
  for (int p : {0, 2}) {  // plain English, and a prompt with CJK characters
    const nlohmann::json& prompt = golden["prompts"][p];
    Result r = RunTandem({"generate", "--prompt=" + prompt["text"].get<std::string>(),
                          "--max_tokens=32", "--ignore_eos", "--threads=2"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, prompt["text"].get<std::string>() + prompt["greedy_text"].get<std::string>() +
                         "\n");
    EXPECT_THAT(r.err, HasSubstr("32 generated, finish=length"));
  }
}

TEST(GenerateCliTest, SeededSamplingIsReproducible) {
  std::vector<std::string> args = {"generate", "--temperature=0.8", "--top_p=0.9",
                                   "--seed=7", "--max_tokens=24"};
  Result a = RunTandem(args), b = RunTandem(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_THAT(a.err, HasSubstr("seed=7"));
}

TEST(GenerateCliTest, ShardedF16ModelRuns) {
  Result r = RunTandem({"generate", "--model=" + testing::FixturePath("models/llama2-tiny"),
                        "--prompt=Hello", "--max_tokens=8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("Hello"));
}

TEST(GenerateCliTest, BadInputGetsClearErrors) {
  Result r = RunTandem({"generate", "--top_p=1.5"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("top_p must be in (0, 1], got 1.5"));
  r = RunTandem({"generate", "--temperature=-1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("temperature must be"));
  r = RunTandem({"generate", "--model=/nonexistent/model"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/model"));
  r = RunTandem({"frobnicate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));
}

}  // namespace
}  // namespace tandem
