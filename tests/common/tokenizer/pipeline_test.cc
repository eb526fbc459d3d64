// Added tokens, pre-tokenizers, normalizers and tokenizer_config.json handling on hand-made
// tokenizer.json files; expected ids were checked against HF tokenizers 0.23.
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "tests/common/tokenizer/test_json.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::BpeModelJson;
using ::tandem::testing::TokenizerJson;
using Ids = std::vector<int32_t>;
using Json = nlohmann::json;

std::unique_ptr<Tokenizer> Make(const Json& root, const std::string& config = "") {
  auto tokenizer = Tokenizer::FromJson(root.dump(), config);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

Ids Encode(const Tokenizer& tokenizer, const std::string& text, bool add_special = false) {
  auto ids = tokenizer.Encode(text, add_special);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : Ids{};
}

Json Added(int id, const std::string& content, Json options = Json::object()) {
  Json token = {{"id", id},          {"content", content}, {"single_word", false},
                {"lstrip", false},   {"rstrip", false},    {"normalized", false},
                {"special", true}};
  for (auto& [key, value] : options.items()) token[key] = value;
  return token;
}

// Printable ASCII, one token per character: ' ' is 0, 'a' is 65.
std::vector<std::string> AsciiVocab() {
  std::vector<std::string> vocab;
  for (char c = ' '; c <= '~'; ++c) vocab.emplace_back(1, c);
  return vocab;
}

class AddedTokensTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Json added = Json::array({Added(100, "<x>", {{"lstrip", true}}),
                              Added(101, "[y]", {{"rstrip", true}}),
                              Added(102, "word", {{"single_word", true}}), Added(103, "<lo"),
                              Added(104, "<long>"),
                              Added(105, "NORM", {{"normalized", true}, {"special", false}})});
    Json normalizer = {{"type", "Replace"}, {"pattern", {{"String", "norm"}}}, {"content", "NORM"}};
    tokenizer_ = Make(TokenizerJson(BpeModelJson(AsciiVocab(), Json::array()),
                                    {{"added_tokens", added}, {"normalizer", normalizer}}));
    ASSERT_NE(tokenizer_, nullptr);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(AddedTokensTest, LstripSwallowsWhitespaceBefore) {
  EXPECT_EQ(Encode(*tokenizer_, "a  <x> b"), (Ids{65, 100, 0, 66}));
}

TEST_F(AddedTokensTest, RstripSwallowsWhitespaceAfter) {
  EXPECT_EQ(Encode(*tokenizer_, "a [y]   b"), (Ids{65, 0, 101, 66}));
}

TEST_F(AddedTokensTest, SingleWordMatchesOnlyWholeWords) {
  EXPECT_EQ(Encode(*tokenizer_, "word words sword word."),
            (Ids{102, 0, 87, 79, 82, 68, 83, 0, 83, 87, 79, 82, 68, 0, 102, 14}));
}

TEST_F(AddedTokensTest, LongestMatchWins) {
  EXPECT_EQ(Encode(*tokenizer_, "<long> <lo <lon"), (Ids{104, 0, 103, 0, 103, 78}));
}

TEST_F(AddedTokensTest, NormalizedTokensMatchAfterNormalization) {
  EXPECT_EQ(Encode(*tokenizer_, "xnormx"), (Ids{88, 105, 88}));
}

TEST_F(AddedTokensTest, LookupsAndFlags) {
  EXPECT_EQ(tokenizer_->vocab_size(), 106);
  EXPECT_EQ(tokenizer_->TokenToId("<long>"), 104);
  EXPECT_EQ(tokenizer_->TokenToId("a"), 65);
  EXPECT_EQ(tokenizer_->TokenToId("nope"), std::nullopt);
  EXPECT_EQ(tokenizer_->IdToToken(104), "<long>");
  EXPECT_EQ(tokenizer_->IdToToken(99), "");   // a gap in the ids
  EXPECT_EQ(tokenizer_->IdToToken(-1), "");
  EXPECT_EQ(tokenizer_->IdToToken(1000), "");
  EXPECT_TRUE(tokenizer_->IsSpecial(104));
  EXPECT_FALSE(tokenizer_->IsSpecial(105));
  EXPECT_FALSE(tokenizer_->IsSpecial(65));
  EXPECT_FALSE(tokenizer_->IsSpecial(5000));
}

TEST_F(AddedTokensTest, DecodeSkipsUnknownIdsAndOptionallySpecials) {
  // No decoder: tokens are joined with spaces, as HF does.
  EXPECT_EQ(tokenizer_->Decode(Ids{65, -7, 104, 99, 1 << 30, 66}, false), "a <long> b");
  EXPECT_EQ(tokenizer_->Decode(Ids{65, 104, 105, 66}, true), "a NORM b");
}

struct SplitCase {
  std::string behavior;
  bool invert;
  Ids expected;
};

class SplitBehaviorTest : public ::testing::TestWithParam<SplitCase> {};

TEST_P(SplitBehaviorTest, MatchesHf) {
  const SplitCase& c = GetParam();
  Json pre = {{"type", "Split"}, {"pattern", {{"String", "-"}}},
              {"behavior", c.behavior}, {"invert", c.invert}};
  Json model = BpeModelJson({"a", "b", "-", "a-", "-b", "a-b", "--"},
                            Json::array({"a -", "- b", "a- b", "- -"}));
  auto tokenizer = Make(TokenizerJson(model, {{"pre_tokenizer", pre}}));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(Encode(*tokenizer, "a-b--a-"), c.expected);
}

INSTANTIATE_TEST_SUITE_P(
    Behaviors, SplitBehaviorTest,
    ::testing::Values(SplitCase{"Removed", false, {0, 1, 0}},
                      SplitCase{"Removed", true, {2, 2, 2, 2}},
                      SplitCase{"Isolated", false, {0, 2, 1, 2, 2, 0, 2}},
                      SplitCase{"Isolated", true, {0, 2, 1, 2, 2, 0, 2}},
                      SplitCase{"MergedWithPrevious", false, {3, 1, 2, 2, 3}},
                      SplitCase{"MergedWithPrevious", true, {0, 4, 2, 2, 0, 2}},
                      SplitCase{"MergedWithNext", false, {0, 4, 2, 2, 0, 2}},
                      SplitCase{"MergedWithNext", true, {3, 1, 2, 2, 3}},
                      SplitCase{"Contiguous", false, {0, 2, 1, 6, 0, 2}},
                      SplitCase{"Contiguous", true, {0, 2, 1, 6, 0, 2}}),
    [](const auto& info) {
      return info.param.behavior + (info.param.invert ? "Inverted" : "");
    });

TEST(SplitTest, RegexPattern) {
  Json pre = {{"type", "Split"}, {"pattern", {{"Regex", "-+"}}},
              {"behavior", "Isolated"}, {"invert", false}};
  Json model = BpeModelJson({"a", "b", "-", "a-", "-b", "a-b", "--"},
                            Json::array({"a -", "- b", "a- b"}));
  auto tokenizer = Make(TokenizerJson(model, {{"pre_tokenizer", pre}}));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(Encode(*tokenizer, "a-b--a-"), (Ids{0, 2, 1, 2, 2, 0, 2}));
}

struct MetaspaceCase {
  std::string scheme;
  bool split;
  Ids expected;
};

class MetaspaceTest : public ::testing::TestWithParam<MetaspaceCase> {};

TEST_P(MetaspaceTest, PrependSchemeMatchesHf) {
  const MetaspaceCase& c = GetParam();
  Json pre = {{"type", "Metaspace"}, {"replacement", "▁"},
              {"prepend_scheme", c.scheme}, {"split", c.split}};
  Json model = BpeModelJson({"▁", "a", "b", "▁a", "▁b", "a▁", "<s>"}, Json::array({"▁ a", "▁ b"}));
  auto tokenizer = Make(TokenizerJson(
      model, {{"pre_tokenizer", pre}, {"added_tokens", Json::array({Added(6, "<s>")})}}));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(Encode(*tokenizer, "a b<s>a  b"), c.expected);
}

INSTANTIATE_TEST_SUITE_P(Schemes, MetaspaceTest,
                         ::testing::Values(MetaspaceCase{"first", true, {3, 4, 6, 1, 0, 4}},
                                           MetaspaceCase{"first", false, {3, 4, 6, 1, 0, 4}},
                                           MetaspaceCase{"always", true, {3, 4, 6, 3, 0, 4}},
                                           MetaspaceCase{"always", false, {3, 4, 6, 3, 0, 4}},
                                           MetaspaceCase{"never", true, {1, 4, 6, 1, 0, 4}},
                                           MetaspaceCase{"never", false, {1, 4, 6, 1, 0, 4}}),
                         [](const auto& info) {
                           return info.param.scheme + (info.param.split ? "Split" : "NoSplit");
                         });

TEST(TokenizerConfigTest, AddBosAndEosWhenThereIsNoPostProcessor) {
  Json added = Json::array({Added(10, "<s>"), Added(11, "</s>")});
  Json root = TokenizerJson(BpeModelJson({"a", "b"}, Json::array()), {{"added_tokens", added}});
  const std::string config =
      R"({"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
          "add_bos_token": true, "add_eos_token": true})";
  auto tokenizer = Make(root, config);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_token_id(), 10);
  EXPECT_EQ(tokenizer->eos_token_id(), 11);
  EXPECT_EQ(Encode(*tokenizer, "ab", /*add_special=*/true), (Ids{10, 0, 1, 11}));
  EXPECT_EQ(Encode(*tokenizer, "ab", /*add_special=*/false), (Ids{0, 1}));
}

TEST(TokenizerConfigTest, PostProcessorWinsOverConfigFlags) {
  // gpt2's config says add_bos_token false and its ByteLevel post-processor adds nothing.
  auto tokenizer = Tokenizer::Load(::tandem::testing::FixturePath("tokenizers/gpt2"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->bos_token_id(), 0);
  EXPECT_EQ((*tokenizer)->eos_token_id(), 0);
  auto llama3 = Tokenizer::Load(::tandem::testing::FixturePath("tokenizers/llama3"));
  ASSERT_TRUE(llama3.ok()) << llama3.status();
  EXPECT_EQ((*llama3)->bos_token_id(), 0);
  EXPECT_EQ((*llama3)->eos_token_id(), 1);
  EXPECT_EQ((*llama3)->vocab_size(), 1024);
  EXPECT_EQ(Encode(**llama3, "a", true).front(), 0);
}

TEST(TokenizerConfigTest, NoConfigMeansNoBosOrEos) {
  auto tokenizer = Make(TokenizerJson(BpeModelJson({"a"}, Json::array())));
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(tokenizer->bos_token_id(), std::nullopt);
  EXPECT_EQ(tokenizer->eos_token_id(), std::nullopt);
  EXPECT_EQ(Encode(*tokenizer, "a", true), (Ids{0}));
}

// \s in tokenizer.json regexes is Oniguruma's: the Unicode White_Space property. PCRE2 10.42's
// own \s also matches U+180E MONGOLIAN VOWEL SEPARATOR, which would merge "  " into one
// pre-token here. Expected ids from HF tokenizers 0.23.
TEST(EncodeTest, RegexWhitespaceIsUnicodeWhiteSpace) {
  auto gpt2 = Tokenizer::Load(::tandem::testing::FixturePath("tokenizers/gpt2"));
  auto llama3 = Tokenizer::Load(::tandem::testing::FixturePath("tokenizers/llama3"));
  ASSERT_TRUE(gpt2.ok() && llama3.ok());
  EXPECT_EQ(Encode(**gpt2, "\"  \u180e"), (Ids{2, 221, 221, 158, 255, 237}));
  EXPECT_EQ(Encode(**llama3, "\"  \u180e"), (Ids{6, 225, 225, 162, 259, 241}));
}

TEST(EncodeTest, EmptyTextGivesOnlySpecialTokens) {
  auto tokenizer = Tokenizer::Load(::tandem::testing::FixturePath("tokenizers/llama2"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(Encode(**tokenizer, "", false), Ids{});
  EXPECT_EQ(Encode(**tokenizer, "", true), (Ids{1}));
}

}  // namespace
}  // namespace tandem
