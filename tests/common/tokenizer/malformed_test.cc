// Hostile or malformed inputs get a clear InvalidArgument naming the field, never a crash.
#include <string>

#include "common/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/tokenizer/test_json.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::BpeModelJson;
using ::tandem::testing::TokenizerJson;
using ::testing::HasSubstr;
using Json = nlohmann::json;

Json GoodModel() { return BpeModelJson({"a", "b", "ab"}, Json::array({"a b"})); }

// The load error for `root`, which must fail with InvalidArgument.
std::string LoadError(const std::string& tokenizer_json, const std::string& config = "") {
  auto tokenizer = Tokenizer::FromJson(tokenizer_json, config);
  EXPECT_FALSE(tokenizer.ok());
  if (tokenizer.ok()) return "";
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << tokenizer.status();
  return std::string(tokenizer.status().message());
}

TEST(MalformedTest, BaselineLoads) {
  EXPECT_TRUE(Tokenizer::FromJson(TokenizerJson(GoodModel()).dump(), "").ok());
}

TEST(MalformedTest, BadJson) {
  EXPECT_THAT(LoadError("{\"model\": {"), HasSubstr("tokenizer.json: not valid JSON"));
  EXPECT_THAT(LoadError(""), HasSubstr("not valid JSON"));
  EXPECT_THAT(LoadError("[1, 2]"), HasSubstr("must be an object"));
}

TEST(MalformedTest, MissingModel) {
  Json root = TokenizerJson(GoodModel());
  root.erase("model");
  EXPECT_THAT(LoadError(root.dump()), HasSubstr("tokenizer.json: model is required"));
}

TEST(MalformedTest, UnknownModelType) {
  Json model = GoodModel();
  model["type"] = "WordPiece";
  EXPECT_EQ(LoadError(TokenizerJson(model).dump()),
            "tokenizer.json: model.type \"WordPiece\" is not supported (supported: BPE)");
}

TEST(MalformedTest, UnknownPreTokenizerType) {
  Json pre = {{"type", "Sequence"},
              {"pretokenizers", Json::array({{{"type", "ByteLevel"}}, {{"type", "Whitespace"}}})}};
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"pre_tokenizer", pre}}).dump()),
              HasSubstr("pre_tokenizer.pretokenizers[1].type \"Whitespace\" is not supported"));
}

TEST(MalformedTest, UnknownNormalizerDecoderAndProcessorTypes) {
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"normalizer", {{"type", "NFKC"}}}}).dump()),
              HasSubstr("normalizer.type \"NFKC\" is not supported"));
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"decoder", {{"type", "WordPiece"}}}}).dump()),
              HasSubstr("decoder.type \"WordPiece\" is not supported"));
  EXPECT_THAT(
      LoadError(TokenizerJson(GoodModel(), {{"post_processor", {{"type", "BertProcessing"}}}}).dump()),
      HasSubstr("post_processor.type \"BertProcessing\" is not supported"));
}

TEST(MalformedTest, MergesReferencingMissingTokens) {
  Json model = GoodModel();
  model["merges"] = Json::array({"a b", "a zz"});
  EXPECT_EQ(LoadError(TokenizerJson(model).dump()),
            "tokenizer.json: model.merges[1] names a token that is not in the vocab: \"zz\"");
  model["merges"] = Json::array({"b a"});  // "ba" is not in the vocab
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()),
              HasSubstr("model.merges[0] merges into \"ba\", which is not in the vocab"));
  model["merges"] = Json::array({"ab"});
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()),
              HasSubstr("model.merges[0] must be two tokens separated by one space"));
  model["merges"] = Json::array({Json::array({"a", 3})});
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()), HasSubstr("model.merges[0] must be"));
}

TEST(MalformedTest, BadVocabIds) {
  Json model = GoodModel();
  model["vocab"]["b"] = 0;
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()), HasSubstr("model.vocab.b reuses id 0"));
  model = GoodModel();
  model["vocab"]["b"] = -1;
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()), HasSubstr("model.vocab.b must be in [0,"));
  model["vocab"]["b"] = "1";
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()), HasSubstr("model.vocab.b must be an integer"));
  model["vocab"]["b"] = 2000000000;
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()), HasSubstr("ids must be below"));
  model["vocab"] = Json::array();
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()), HasSubstr("model.vocab must be an object"));
}

TEST(MalformedTest, BadAddedTokens) {
  Json added = Json::array({{{"id", 7}, {"content", "<s>"}}, {{"id", 7}, {"content", "</s>"}}});
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"added_tokens", added}}).dump()),
              HasSubstr("added_tokens[1] reuses id 7"));
  added = Json::array({{{"id", -3}, {"content", "<s>"}}});
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"added_tokens", added}}).dump()),
              HasSubstr("added_tokens[0].id must be in [0,"));
  added = Json::array({{{"id", 3}, {"content", ""}}});
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"added_tokens", added}}).dump()),
              HasSubstr("added_tokens[0].content must not be empty"));
}

TEST(MalformedTest, BadPatternsAndOptions) {
  Json pre = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"pre_tokenizer", pre}}).dump()),
              HasSubstr("pre_tokenizer.pattern.Regex regex \"(unclosed\" does not compile"));
  pre = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", "Sideways"}};
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"pre_tokenizer", pre}}).dump()),
              HasSubstr("pre_tokenizer.behavior \"Sideways\" is not a split behavior"));
  pre = {{"type", "Metaspace"}, {"replacement", "ab"}};
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"pre_tokenizer", pre}}).dump()),
              HasSubstr("pre_tokenizer.replacement must be exactly one character"));
  Json model = GoodModel();
  model["unk_token"] = "<unk>";
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()),
              HasSubstr("model.unk_token \"<unk>\" is not in the vocab"));
  model = GoodModel();
  model["dropout"] = 0.1;
  EXPECT_THAT(LoadError(TokenizerJson(model).dump()), HasSubstr("model.dropout is not supported"));
}

TEST(MalformedTest, TemplateNamingUnknownSpecialToken) {
  Json post = {{"type", "TemplateProcessing"},
               {"single", Json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                       {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
               {"special_tokens", Json::object()}};
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"post_processor", post}}).dump()),
              HasSubstr("post_processor.single[0].SpecialToken names \"<s>\""));
  post["special_tokens"] = {{"<s>", {{"id", "<s>"}, {"ids", Json::array({99})}, {"tokens", Json::array({"<s>"})}}}};
  EXPECT_THAT(LoadError(TokenizerJson(GoodModel(), {{"post_processor", post}}).dump()),
              HasSubstr("post_processor uses id 99, which names no token"));
}

TEST(MalformedTest, BadTokenizerConfig) {
  const std::string root = TokenizerJson(GoodModel()).dump();
  EXPECT_THAT(LoadError(root, "{not json"), HasSubstr("tokenizer_config.json"));
  EXPECT_THAT(LoadError(root, R"({"bos_token": 5})"),
              HasSubstr("tokenizer_config.json: bos_token must be a string"));
  EXPECT_THAT(LoadError(root, R"({"eos_token": "</s>"})"),
              HasSubstr("tokenizer_config.json: eos_token \"</s>\" is not a token"));
  EXPECT_THAT(LoadError(root, R"({"add_bos_token": "yes"})"),
              HasSubstr("add_bos_token must be true or false"));
}

TEST(MalformedTest, WrongFieldTypesDoNotThrow) {
  for (const char* field : {"normalizer", "pre_tokenizer", "post_processor", "decoder", "model",
                            "added_tokens"}) {
    for (const Json& value : {Json(3), Json("x"), Json::array({1}), Json::object()}) {
      Json root = TokenizerJson(GoodModel());
      root[field] = value;
      auto tokenizer = Tokenizer::FromJson(root.dump(), "");
      EXPECT_FALSE(tokenizer.ok()) << field << " = " << value.dump();
    }
  }
}

TEST(MalformedTest, InvalidUtf8TextNamesTheOffset) {
  auto tokenizer = Tokenizer::FromJson(TokenizerJson(GoodModel()).dump(), "");
  ASSERT_TRUE(tokenizer.ok());
  auto ids = (*tokenizer)->Encode("ab\xC3(", false);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8 at byte offset 2"));
  // A surrogate (ED A0 80) and an overlong encoding (C0 AF) are ill-formed too.
  EXPECT_FALSE((*tokenizer)->Encode("a\xED\xA0\x80", false).ok());
  EXPECT_FALSE((*tokenizer)->Encode("\xC0\xAF", false).ok());
}

TEST(MalformedTest, LoadFromMissingDirectoryIsNotFound) {
  auto tokenizer = Tokenizer::Load(::tandem::testing::MakeTempDir("no_tokenizer"));
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tokenizer.status().message(), HasSubstr("tokenizer.json"));
}

}  // namespace
}  // namespace tandem
