// BPE model semantics on hand-made vocabularies; expected ids were checked against HF
// tokenizers 0.23 with the same tokenizer.json.
#include <chrono>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/common/tokenizer/test_json.h"

namespace tandem {
namespace {

using ::tandem::testing::BpeModelJson;
using ::tandem::testing::TokenizerJson;
using Ids = std::vector<int32_t>;

// ids:                                 0    1    2    3     4     5      6        7
const std::vector<std::string> kVocab = {"a", "b", "c", "ab", "bc", "abc", "<unk>", "<0xC3>",
                                         // 8       9
                                         "<0xA9>", "x"};

std::unique_ptr<Tokenizer> Make(const nlohmann::json& model) {
  auto tokenizer = Tokenizer::FromJson(TokenizerJson(model).dump(), "");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

Ids Encode(const Tokenizer& tokenizer, const std::string& text) {
  auto ids = tokenizer.Encode(text, /*add_special_tokens=*/false);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : Ids{};
}

TEST(BpeModelTest, MergesApplyInRankOrderNotTextOrder) {
  // "b c" has rank 0, so "abc" becomes a + bc -> abc, never ab + c.
  auto tokenizer = Make(BpeModelJson(kVocab, nlohmann::json::array({"b c", "a bc"})));
  EXPECT_EQ(Encode(*tokenizer, "abc"), (Ids{5}));
  EXPECT_EQ(Encode(*tokenizer, "abcabc"), (Ids{5, 5}));
  auto other = Make(BpeModelJson(kVocab, nlohmann::json::array({"a b", "b c"})));
  EXPECT_EQ(Encode(*other, "abc"), (Ids{3, 2}));
}

TEST(BpeModelTest, MergesAsPairsEqualMergesAsStrings) {
  auto pairs = Make(BpeModelJson(kVocab, nlohmann::json::array({nlohmann::json::array({"b", "c"}), nlohmann::json::array({"a", "bc"})})));
  EXPECT_EQ(Encode(*pairs, "abc"), (Ids{5}));
}

TEST(BpeModelTest, IgnoreMergesEmitsWholeWordFoundInVocab) {
  nlohmann::json model = BpeModelJson(kVocab, nlohmann::json::array({"a b"}));
  EXPECT_EQ(Encode(*Make(model), "abc"), (Ids{3, 2}));
  model["ignore_merges"] = true;
  EXPECT_EQ(Encode(*Make(model), "abc"), (Ids{5}));
}

TEST(BpeModelTest, ByteFallbackThenUnknown) {
  nlohmann::json model = BpeModelJson(kVocab, nlohmann::json::array());
  model["byte_fallback"] = true;
  model["unk_token"] = "<unk>";
  // 'é' is C3 A9 (both byte tokens exist); 'z' has no <0x7A> token, so it is unknown.
  EXPECT_EQ(Encode(*Make(model), "aéz"), (Ids{0, 7, 8, 6}));
}

TEST(BpeModelTest, FuseUnkMergesConsecutiveUnknowns) {
  nlohmann::json model = BpeModelJson(kVocab, nlohmann::json::array());
  model["unk_token"] = "<unk>";
  EXPECT_EQ(Encode(*Make(model), "zzazé"), (Ids{6, 6, 0, 6, 6}));
  model["fuse_unk"] = true;
  EXPECT_EQ(Encode(*Make(model), "zzazé"), (Ids{6, 0, 6}));
}

TEST(BpeModelTest, UnknownCharactersAreDroppedWithoutUnkToken) {
  EXPECT_EQ(Encode(*Make(BpeModelJson(kVocab, nlohmann::json::array())), "zzazé"), (Ids{0}));
}

TEST(BpeModelTest, ContinuingSubwordPrefixAndEndOfWordSuffix) {
  const std::vector<std::string> vocab = {"a", "##b", "##c</w>", "a##b", "ab",
                                          "##b##c</w>", "abc</w>", "c</w>", "b", "##c"};
  nlohmann::json model = BpeModelJson(vocab, nlohmann::json::array({"a ##b", "ab ##c</w>"}));
  model["continuing_subword_prefix"] = "##";
  model["end_of_word_suffix"] = "</w>";
  EXPECT_EQ(Encode(*Make(model), "abc"), (Ids{6}));
}

TEST(BpeModelTest, LongWordMergesInNearLinearTime) {
  // 2^17 'a's with merges a+a, aa+aa, ... collapse to one token per 2^16; a quadratic merge
  // loop would take minutes here.
  std::vector<std::string> vocab = {"a"};
  nlohmann::json merges = nlohmann::json::array();
  for (int level = 1; level <= 16; ++level) {
    const std::string& half = vocab.back();
    merges.push_back(half + " " + half);
    vocab.push_back(half + half);
  }
  auto tokenizer = Make(BpeModelJson(vocab, merges));
  const auto start = std::chrono::steady_clock::now();
  const Ids ids = Encode(*tokenizer, std::string(size_t{1} << 17, 'a'));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ids, (Ids{16, 16}));
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

}  // namespace
}  // namespace tandem
