// IncrementalDetokenizer: streamed pieces concatenate to the full decode and never split a
// UTF-8 character, for every golden case and the fixture models' greedy continuations.
#include "common/tokenizer/incremental_detokenizer.h"

#include <string>
#include <vector>

#include "common/tokenizer/utf8.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::FixturePath;
using ::tandem::testing::ReadJsonFixture;

std::unique_ptr<Tokenizer> LoadFixture(const std::string& relative) {
  auto loaded = Tokenizer::Load(FixturePath(relative));
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return loaded.ok() ? *std::move(loaded) : nullptr;
}

// Streams `ids` one at a time; checks every piece is whole characters; returns the pieces.
std::vector<std::string> Stream(const Tokenizer& tokenizer, const std::vector<int32_t>& context,
                                const std::vector<int32_t>& ids, bool skip_special_tokens) {
  IncrementalDetokenizer detokenizer(tokenizer, context, {.skip_special_tokens = skip_special_tokens});
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(detokenizer.Push(id));
  pieces.push_back(detokenizer.Flush());
  for (const std::string& piece : pieces) {
    EXPECT_FALSE(tokenizer::FirstInvalidUtf8Offset(piece).has_value())
        << "piece is not whole UTF-8 characters: \"" << piece << "\"";
  }
  return pieces;
}

std::string Join(const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += p;
  return out;
}

class GoldenStreamTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenStreamTest, StreamedPiecesConcatenateToDecode) {
  auto tokenizer = LoadFixture("tokenizers/" + GetParam());
  ASSERT_NE(tokenizer, nullptr);
  const nlohmann::json golden = ReadJsonFixture("tokenizers/golden.json");
  const nlohmann::json& entries = golden["tokenizers"][GetParam()];
  for (size_t i = 0; i < entries.size(); ++i) {
    for (const char* field : {"ids", "ids_with_special"}) {
      const auto ids = entries[i][field].get<std::vector<int32_t>>();
      for (bool skip : {false, true}) {
        EXPECT_EQ(Join(Stream(*tokenizer, {}, ids, skip)), tokenizer->Decode(ids, skip))
            << "case " << i << " " << field << " skip_special_tokens=" << skip;
      }
    }
    EXPECT_EQ(Join(Stream(*tokenizer, {}, entries[i]["ids"].get<std::vector<int32_t>>(), false)),
              entries[i]["decoded"].get<std::string>())
        << "case " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenStreamTest,
                         ::testing::Values("llama3", "gpt2", "llama2", "mistral"),
                         [](const auto& info) { return info.param; });

class ModelStreamTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelStreamTest, GreedyContinuationWithoutContextMatchesGreedyText) {
  auto tokenizer = LoadFixture("models/" + GetParam());
  ASSERT_NE(tokenizer, nullptr);
  const nlohmann::json golden = ReadJsonFixture("models/" + GetParam() + "/golden.json");
  for (const nlohmann::json& prompt : golden["prompts"]) {
    const auto greedy = prompt["greedy"].get<std::vector<int32_t>>();
    const std::string expected = prompt["greedy_text"].get<std::string>();
    ASSERT_EQ(tokenizer->Decode(greedy, false), expected);
    EXPECT_EQ(Join(Stream(*tokenizer, {}, greedy, false)), expected);
  }
}

TEST_P(ModelStreamTest, GreedyContinuationAfterPromptContinuesThePromptText) {
  auto tokenizer = LoadFixture("models/" + GetParam());
  ASSERT_NE(tokenizer, nullptr);
  const nlohmann::json golden = ReadJsonFixture("models/" + GetParam() + "/golden.json");
  for (const nlohmann::json& prompt : golden["prompts"]) {
    const auto prompt_ids = prompt["ids"].get<std::vector<int32_t>>();
    const auto greedy = prompt["greedy"].get<std::vector<int32_t>>();
    std::vector<int32_t> all = prompt_ids;
    all.insert(all.end(), greedy.begin(), greedy.end());
    for (bool skip : {false, true}) {
      const std::string prompt_text = tokenizer->Decode(prompt_ids, skip);
      const std::string full_text = tokenizer->Decode(all, skip);
      ASSERT_TRUE(full_text.starts_with(prompt_text));
      EXPECT_EQ(Join(Stream(*tokenizer, prompt_ids, greedy, skip)),
                full_text.substr(prompt_text.size()))
          << "prompt \"" << prompt["text"].get<std::string>() << "\" skip=" << skip;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelStreamTest,
                         ::testing::Values("llama3-tiny", "llama2-tiny"),
                         [](const auto& info) {
                           return info.param == "llama3-tiny" ? std::string("llama3_tiny")
                                                              : std::string("llama2_tiny");
                         });

// Byte-level tokens that each carry part of one character: nothing is emitted until the
// character is complete.
TEST(IncrementalDetokenizerTest, HoldsBackPartialByteLevelCharacter) {
  auto tokenizer = LoadFixture("tokenizers/gpt2");
  ASSERT_NE(tokenizer, nullptr);
  // "你" is E4 BD A0; as GPT-2 byte characters: "ä", "½", "ł" (0xA0 is not self-mapped).
  std::vector<int32_t> ids;
  for (const char* token : {"a", "ä", "½", "ł", "b"}) {
    std::optional<int32_t> id = tokenizer->TokenToId(token);
    ASSERT_TRUE(id.has_value()) << token;
    ids.push_back(*id);
  }
  IncrementalDetokenizer detokenizer(*tokenizer, {}, {});
  EXPECT_EQ(detokenizer.Push(ids[0]), "a");
  EXPECT_EQ(detokenizer.Push(ids[1]), "");
  EXPECT_EQ(detokenizer.Push(ids[2]), "");
  EXPECT_EQ(detokenizer.Push(ids[3]), "你");
  EXPECT_EQ(detokenizer.Push(ids[4]), "b");
  EXPECT_EQ(detokenizer.Flush(), "");
}

TEST(IncrementalDetokenizerTest, HoldsBackPartialByteFallbackCharacter) {
  auto tokenizer = LoadFixture("tokenizers/mistral");
  ASSERT_NE(tokenizer, nullptr);
  std::vector<int32_t> ids;
  for (const char* token : {"▁a", "<0xE4>", "<0xBD>", "<0xA0>", "▁and"}) {
    std::optional<int32_t> id = tokenizer->TokenToId(token);
    ASSERT_TRUE(id.has_value()) << token;
    ids.push_back(*id);
  }
  IncrementalDetokenizer detokenizer(*tokenizer, {}, {});
  EXPECT_EQ(detokenizer.Push(ids[0]), "a");  // Metaspace drops the first token's "▁"
  EXPECT_EQ(detokenizer.Push(ids[1]), "");
  EXPECT_EQ(detokenizer.Push(ids[2]), "");
  EXPECT_EQ(detokenizer.Push(ids[3]), "你");
  EXPECT_EQ(detokenizer.Push(ids[4]), " and");  // mid-stream: the space stays
  EXPECT_EQ(detokenizer.Flush(), "");
}

TEST(IncrementalDetokenizerTest, FlushEmitsIncompleteCharacterAsReplacement) {
  auto tokenizer = LoadFixture("tokenizers/gpt2");
  ASSERT_NE(tokenizer, nullptr);
  const std::vector<int32_t> ids = {*tokenizer->TokenToId("a"), *tokenizer->TokenToId("ä")};
  IncrementalDetokenizer detokenizer(*tokenizer, {}, {});
  EXPECT_EQ(detokenizer.Push(ids[0]), "a");
  EXPECT_EQ(detokenizer.Push(ids[1]), "");
  EXPECT_EQ(detokenizer.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(tokenizer->Decode(ids, false), "a\xEF\xBF\xBD");
}

TEST(IncrementalDetokenizerTest, SentencePieceKeepsLeadingSpaceAfterContext) {
  auto tokenizer = LoadFixture("tokenizers/llama2");
  ASSERT_NE(tokenizer, nullptr);
  auto prompt = tokenizer->Encode("Hello", /*add_special_tokens=*/true);
  auto next = tokenizer->Encode("world", /*add_special_tokens=*/false);  // "▁world..."
  ASSERT_TRUE(prompt.ok() && next.ok());
  IncrementalDetokenizer detokenizer(*tokenizer, *prompt, {.skip_special_tokens = true});
  std::string text;
  for (int32_t id : *next) text += detokenizer.Push(id);
  text += detokenizer.Flush();
  EXPECT_EQ(text, " world");
  // Without context the stream is the start of the text, so the Strip decoder applies.
  EXPECT_EQ(Join(Stream(*tokenizer, {}, *next, true)), "world");
}

TEST(IncrementalDetokenizerTest, LongStreamCompactsAndStaysExact) {
  auto tokenizer = LoadFixture("tokenizers/llama2");
  ASSERT_NE(tokenizer, nullptr);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "line " + std::to_string(i) + " 你好 ok\n";
  auto ids = tokenizer->Encode(text, /*add_special_tokens=*/false);
  ASSERT_TRUE(ids.ok());
  ASSERT_GT(ids->size(), 1000u);
  EXPECT_EQ(Join(Stream(*tokenizer, {}, *ids, false)), tokenizer->Decode(*ids, false));
}

}  // namespace
}  // namespace tandem
