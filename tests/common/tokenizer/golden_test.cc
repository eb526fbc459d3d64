// Every fixture tokenizer against HF tokenizers' ids and decodes (tests/fixtures/tokenizers/
// golden.json, made by tools/make_tokenizers.py).
#include <string>
#include <thread>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::FixturePath;
using ::tandem::testing::ReadJsonFixture;

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto loaded = Tokenizer::Load(FixturePath("tokenizers/" + GetParam()));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    tokenizer_ = *std::move(loaded);
    golden_ = ReadJsonFixture("tokenizers/golden.json");
    ASSERT_FALSE(golden_.is_null());
    cases_ = golden_["cases"].get<std::vector<std::string>>();
    expected_ = golden_["tokenizers"][GetParam()];
    ASSERT_EQ(expected_.size(), cases_.size());
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  nlohmann::json golden_;
  std::vector<std::string> cases_;
  nlohmann::json expected_;
};

TEST_P(GoldenTest, EncodeWithoutSpecialTokensMatchesHf) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    auto ids = tokenizer_->Encode(cases_[i], /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected_[i]["ids"].get<std::vector<int32_t>>())
        << "case " << i << ": \"" << cases_[i] << "\"";
  }
}

TEST_P(GoldenTest, EncodeWithSpecialTokensMatchesHf) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    auto ids = tokenizer_->Encode(cases_[i], /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, expected_[i]["ids_with_special"].get<std::vector<int32_t>>())
        << "case " << i << ": \"" << cases_[i] << "\"";
  }
}

TEST_P(GoldenTest, DecodeMatchesHf) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    const auto ids = expected_[i]["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special_tokens=*/false),
              expected_[i]["decoded"].get<std::string>())
        << "case " << i;
  }
}

TEST_P(GoldenTest, ConcurrentEncodesAgree) {
  constexpr int kThreads = 8;
  std::vector<std::vector<std::vector<int32_t>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < cases_.size(); ++i) {
          // Each thread walks the cases in a different order to interleave differently.
          const size_t c = (i + static_cast<size_t>(t) * 7) % cases_.size();
          auto ids = tokenizer_->Encode(cases_[c], /*add_special_tokens=*/true);
          if (round == 0) results[t].resize(cases_.size());
          results[t][c] = ids.ok() ? *ids : std::vector<int32_t>{-1};
          (void)tokenizer_->Decode(results[t][c], /*skip_special_tokens=*/true);
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    for (size_t i = 0; i < cases_.size(); ++i) {
      EXPECT_EQ(results[t][i], expected_[i]["ids_with_special"].get<std::vector<int32_t>>())
          << "thread " << t << " case " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest,
                         ::testing::Values("llama3", "gpt2", "llama2", "mistral"),
                         [](const auto& info) { return info.param; });

class ByteLevelRoundTripTest : public GoldenTest {};

TEST_P(ByteLevelRoundTripTest, DecodeOfEncodeIsIdentity) {
  for (size_t i = 0; i < cases_.size(); ++i) {
    auto ids = tokenizer_->Encode(cases_[i], /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(tokenizer_->Decode(*ids, /*skip_special_tokens=*/false), cases_[i]) << "case " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(ByteLevel, ByteLevelRoundTripTest, ::testing::Values("llama3", "gpt2"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace tandem
