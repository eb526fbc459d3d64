#include "common/model/model_config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

// A valid Llama config; tests change one thing at a time.
json BaseConfig() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", 100},
          {"hidden_size", 64},
          {"intermediate_size", 128},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 256},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

absl::StatusOr<ModelConfig> Parse(const json& config) { return ParseModelConfig(config.dump()); }

// Expects `config` to be rejected with InvalidArgument mentioning every one of `parts`.
void ExpectRejected(const json& config, std::initializer_list<std::string> parts) {
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_FALSE(parsed.ok()) << config.dump();
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& part : parts) {
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(part));
  }
}

json Llama3Scaling() {
  return {{"rope_type", "llama3"},
          {"factor", 8.0},
          {"low_freq_factor", 1.0},
          {"high_freq_factor", 4.0},
          {"original_max_position_embeddings", 64}};
}

void ExpectMatchesJson(const ModelConfig& config, const json& expected) {
  EXPECT_EQ(config.architecture, expected["architectures"][0]);
  EXPECT_EQ(config.vocab_size, expected["vocab_size"]);
  EXPECT_EQ(config.hidden_size, expected["hidden_size"]);
  EXPECT_EQ(config.intermediate_size, expected["intermediate_size"]);
  EXPECT_EQ(config.num_layers, expected["num_hidden_layers"]);
  EXPECT_EQ(config.num_heads, expected["num_attention_heads"]);
  EXPECT_EQ(config.num_kv_heads, expected["num_key_value_heads"]);
  EXPECT_EQ(config.head_dim, expected.value("head_dim", config.hidden_size / config.num_heads));
  EXPECT_EQ(config.max_position_embeddings, expected["max_position_embeddings"]);
  EXPECT_FLOAT_EQ(config.rms_norm_eps, expected["rms_norm_eps"].get<float>());
  EXPECT_FLOAT_EQ(config.rope_theta, expected["rope_theta"].get<float>());
  EXPECT_EQ(config.tie_word_embeddings, expected["tie_word_embeddings"]);
  EXPECT_EQ(config.attention_bias, expected["attention_bias"]);
  EXPECT_EQ(config.torch_dtype, ParseTorchDType(expected["torch_dtype"].get<std::string>()));
  EXPECT_EQ(config.bos_token_id, expected["bos_token_id"].get<int32_t>());
}

TEST(ModelConfigFixtureTest, Llama3TinyMatchesJson) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(testing::FixturePath("models/llama3-tiny"));
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectMatchesJson(*config, testing::ReadJsonFixture("models/llama3-tiny/config.json"));
  EXPECT_EQ(config->head_dim, 32);
  EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(config->rope_scaling.factor, 8.0f);
  EXPECT_FLOAT_EQ(config->rope_scaling.low_freq_factor, 1.0f);
  EXPECT_FLOAT_EQ(config->rope_scaling.high_freq_factor, 4.0f);
  EXPECT_EQ(config->rope_scaling.original_max_position_embeddings, 64);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(1, 4));
}

TEST(ModelConfigFixtureTest, Llama2TinyMatchesJson) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(testing::FixturePath("models/llama2-tiny"));
  ASSERT_TRUE(config.ok()) << config.status();
  ExpectMatchesJson(*config, testing::ReadJsonFixture("models/llama2-tiny/config.json"));
  EXPECT_EQ(config->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_THAT(config->eos_token_ids, ElementsAre(2));
}

TEST(ModelConfigTest, LoadFromMissingDirIsNotFound) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig("/nonexistent/model/dir");
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
}

TEST(ModelConfigTest, Defaults) {
  json config = BaseConfig();
  for (const char* key :
       {"num_key_value_heads", "rms_norm_eps", "rope_theta", "bos_token_id", "eos_token_id"}) {
    config.erase(key);
  }
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->num_kv_heads, 4);
  EXPECT_EQ(parsed->head_dim, 16);
  EXPECT_FLOAT_EQ(parsed->rms_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(parsed->rope_theta, 10000.0f);
  EXPECT_FALSE(parsed->tie_word_embeddings);
  EXPECT_FALSE(parsed->attention_bias);
  EXPECT_EQ(parsed->torch_dtype, DType::kF32);
  EXPECT_EQ(parsed->bos_token_id, std::nullopt);
  EXPECT_TRUE(parsed->eos_token_ids.empty());
}

TEST(ModelConfigTest, RejectsBadJson) {
  EXPECT_FALSE(ParseModelConfig("{\"vocab_size\": ").ok());
  EXPECT_THAT(std::string(ParseModelConfig("[1, 2]").status().message()), HasSubstr("JSON object"));
  EXPECT_THAT(std::string(ParseModelConfig("nope", "my/config.json").status().message()),
              HasSubstr("my/config.json: not valid JSON"));
}

TEST(ModelConfigTest, RejectsUnsupportedArchitecturesByName) {
  json config = BaseConfig();
  config["architectures"] = {"GPT2LMHeadModel"};
  ExpectRejected(config, {"config.json: architecture \"GPT2LMHeadModel\" is not supported "
                          "(supported: LlamaForCausalLM)"});
  for (const char* later : {"MistralForCausalLM", "Qwen2ForCausalLM"}) {
    config["architectures"] = {later};
    ExpectRejected(config, {later, "not supported"});
  }
  config["architectures"] = "LlamaForCausalLM";
  ExpectRejected(config, {"architectures must be a non-empty list of strings"});
}

TEST(ModelConfigTest, ModelTypeAloneIdentifiesLlama) {
  json config = BaseConfig();
  config.erase("architectures");
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->architecture, "LlamaForCausalLM");
  config["model_type"] = "gpt2";
  ExpectRejected(config, {"model_type \"gpt2\" is not supported"});
  config.erase("model_type");
  ExpectRejected(config, {"neither architectures nor model_type"});
}

TEST(ModelConfigTest, RejectsMissingAndMistypedFields) {
  json config = BaseConfig();
  config.erase("hidden_size");
  ExpectRejected(config, {"hidden_size is required"});
  config["hidden_size"] = "64";
  ExpectRejected(config, {"hidden_size must be an integer", "string"});
  config["hidden_size"] = 64.5;
  ExpectRejected(config, {"hidden_size must be an integer"});
  config["hidden_size"] = true;
  ExpectRejected(config, {"hidden_size must be an integer", "boolean"});
  config["hidden_size"] = 18446744073709551615ull;
  ExpectRejected(config, {"hidden_size must be an integer"});
  config["hidden_size"] = 64;
  config["rms_norm_eps"] = "1e-5";
  ExpectRejected(config, {"rms_norm_eps must be a number"});
  config["rms_norm_eps"] = 1e-5;
  config["tie_word_embeddings"] = 1;
  ExpectRejected(config, {"tie_word_embeddings must be a boolean"});
}

TEST(ModelConfigTest, RejectsOutOfRangeSizes) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "max_position_embeddings"}) {
    json config = BaseConfig();
    config[key] = 0;
    ExpectRejected(config, {key, "must be in [1, 2147483647], got 0"});
    config[key] = -3;
    ExpectRejected(config, {key, "got -3"});
  }
}

TEST(ModelConfigTest, HeadsMustDivideByKvHeads) {
  json config = BaseConfig();
  config["num_key_value_heads"] = 3;
  ExpectRejected(config, {"num_attention_heads (4) must be divisible by num_key_value_heads (3)"});
}

TEST(ModelConfigTest, HeadDimOverrideDefaultAndParity) {
  json config = BaseConfig();
  config["head_dim"] = 32;  // 4 * 32 != hidden_size 64: allowed, Llama permits an override
  ASSERT_TRUE(Parse(config).ok());
  EXPECT_EQ(Parse(config)->head_dim, 32);
  config["head_dim"] = nullptr;
  EXPECT_EQ(Parse(config)->head_dim, 16);
  config["head_dim"] = 15;
  ExpectRejected(config, {"head_dim must be even", "15"});
  config["head_dim"] = 0;
  ExpectRejected(config, {"head_dim must be in [1"});
  config.erase("head_dim");
  config["num_attention_heads"] = 6;
  config["num_key_value_heads"] = 6;
  ExpectRejected(config, {"hidden_size (64) must be divisible by num_attention_heads (6)"});
}

TEST(ModelConfigTest, RejectsNonPositiveEpsAndTheta) {
  json config = BaseConfig();
  config["rms_norm_eps"] = 0.0;
  ExpectRejected(config, {"rms_norm_eps must be a finite number > 0"});
  config["rms_norm_eps"] = 1e-5;
  config["rope_theta"] = -1.0;
  ExpectRejected(config, {"rope_theta must be a finite number > 0"});
  config["rope_theta"] = 1e300;  // overflows float
  ExpectRejected(config, {"rope_theta must be a finite number > 0"});
}

TEST(ModelConfigTest, RopeScalingLlama3AndDefault) {
  json config = BaseConfig();
  config["rope_scaling"] = nullptr;
  EXPECT_EQ(Parse(config)->rope_scaling.type, RopeScaling::Type::kNone);
  config["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(Parse(config)->rope_scaling.type, RopeScaling::Type::kNone);
  json legacy = Llama3Scaling();
  legacy.erase("rope_type");
  legacy["type"] = "llama3";  // the pre-4.45 spelling
  config["rope_scaling"] = legacy;
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(parsed->rope_scaling.factor, 8.0f);
  EXPECT_EQ(parsed->rope_scaling.original_max_position_embeddings, 64);
}

TEST(ModelConfigTest, RejectsUnsupportedRopeTypesByName) {
  json config = BaseConfig();
  for (const char* type : {"linear", "dynamic", "yarn", "longrope"}) {
    config["rope_scaling"] = {{"rope_type", type}, {"factor", 2.0}};
    ExpectRejected(config, {"rope_scaling.rope_type", type, "supported: default, llama3"});
  }
  config["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  ExpectRejected(config, {"rope_scaling.type \"linear\" is not supported"});
  config["rope_scaling"] = {{"factor", 2.0}};
  ExpectRejected(config, {"rope_scaling.rope_type is required"});
  config["rope_scaling"] = "llama3";
  ExpectRejected(config, {"rope_scaling must be an object or null"});
}

TEST(ModelConfigTest, RejectsBadLlama3Parameters) {
  json config = BaseConfig();
  config["rope_scaling"] = Llama3Scaling();
  config["rope_scaling"]["factor"] = 0.5;
  ExpectRejected(config, {"rope_scaling.factor must be >= 1"});
  config["rope_scaling"] = Llama3Scaling();
  config["rope_scaling"]["low_freq_factor"] = 4.0;
  ExpectRejected(config, {"rope_scaling.low_freq_factor (4) must be < "
                          "rope_scaling.high_freq_factor (4)"});
  config["rope_scaling"] = Llama3Scaling();
  config["rope_scaling"].erase("original_max_position_embeddings");
  ExpectRejected(config, {"rope_scaling.original_max_position_embeddings is required"});
}

TEST(ModelConfigTest, TransformersV5RopeParameters) {
  json config = BaseConfig();
  config.erase("rope_theta");
  config["rope_parameters"] = Llama3Scaling();
  config["rope_parameters"]["rope_theta"] = 500000.0;
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FLOAT_EQ(parsed->rope_theta, 500000.0f);
  EXPECT_EQ(parsed->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(parsed->rope_scaling.high_freq_factor, 4.0f);

  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  parsed = Parse(config);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FLOAT_EQ(parsed->rope_theta, 1e6f);
  EXPECT_EQ(parsed->rope_scaling.type, RopeScaling::Type::kNone);

  config["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  ExpectRejected(config, {"rope_parameters.rope_type \"yarn\" is not supported"});
}

TEST(ModelConfigTest, DTypeSpellings) {
  json config = BaseConfig();
  config["torch_dtype"] = "bfloat16";
  EXPECT_EQ(Parse(config)->torch_dtype, DType::kBF16);
  config.erase("torch_dtype");
  config["dtype"] = "float16";  // transformers v5
  EXPECT_EQ(Parse(config)->torch_dtype, DType::kF16);
  config["dtype"] = "float64";
  ExpectRejected(config, {"dtype \"float64\" is not supported"});
}

TEST(ModelConfigTest, TokenIds) {
  json config = BaseConfig();
  config["bos_token_id"] = nullptr;
  config["eos_token_id"] = nullptr;
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->bos_token_id, std::nullopt);
  EXPECT_TRUE(parsed->eos_token_ids.empty());
  config["eos_token_id"] = 7;
  EXPECT_THAT(Parse(config)->eos_token_ids, ElementsAre(7));
  config["eos_token_id"] = {9, 7, 9};
  EXPECT_THAT(Parse(config)->eos_token_ids, ElementsAre(9, 7));
  config["eos_token_id"] = {9, "7"};
  ExpectRejected(config, {"eos_token_id must be an integer or a list of integers"});
  config["eos_token_id"] = {100};
  ExpectRejected(config, {"eos_token_id must be in [0, 100), got 100"});
  config["eos_token_id"] = 2;
  config["bos_token_id"] = -1;
  ExpectRejected(config, {"bos_token_id must be in [0, 100), got -1"});
}

TEST(ModelConfigTest, GenerationConfigMergesEosAndBos) {
  json config = BaseConfig();
  config["bos_token_id"] = nullptr;
  config["eos_token_id"] = {2, 5};
  absl::StatusOr<ModelConfig> parsed = Parse(config);
  ASSERT_TRUE(parsed.ok());
  ASSERT_TRUE(
      MergeGenerationConfig(R"({"eos_token_id": [5, 8, 2, 9], "bos_token_id": 3})", *parsed).ok());
  EXPECT_THAT(parsed->eos_token_ids, ElementsAre(2, 5, 8, 9));
  EXPECT_EQ(parsed->bos_token_id, 3);
  // bos from config.json wins; an int eos is merged like a list of one.
  ASSERT_TRUE(MergeGenerationConfig(R"({"eos_token_id": 11, "bos_token_id": 4})", *parsed).ok());
  EXPECT_THAT(parsed->eos_token_ids, ElementsAre(2, 5, 8, 9, 11));
  EXPECT_EQ(parsed->bos_token_id, 3);
}

TEST(ModelConfigTest, BadGenerationConfigLeavesConfigUnchanged) {
  absl::StatusOr<ModelConfig> parsed = Parse(BaseConfig());
  ASSERT_TRUE(parsed.ok());
  absl::Status merged = MergeGenerationConfig(R"({"eos_token_id": [3, 1000]})", *parsed);
  EXPECT_THAT(std::string(merged.message()),
              HasSubstr("generation_config.json: eos_token_id must be in [0, 100)"));
  EXPECT_THAT(parsed->eos_token_ids, ElementsAre(2));
  EXPECT_FALSE(MergeGenerationConfig("{", *parsed).ok());
  EXPECT_FALSE(MergeGenerationConfig(R"({"bos_token_id": "1"})", *parsed).ok());
}

TEST(ModelConfigTest, LoadMergesGenerationConfigFromDir) {
  std::string dir = testing::MakeTempDir("model");
  json config = BaseConfig();
  testing::WriteFile(dir + "/config.json", config.dump());
  testing::WriteFile(dir + "/generation_config.json", R"({"eos_token_id": [2, 3]})");
  absl::StatusOr<ModelConfig> loaded = LoadModelConfig(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->eos_token_ids, ElementsAre(2, 3));
  testing::WriteFile(dir + "/generation_config.json", "not json");
  EXPECT_THAT(std::string(LoadModelConfig(dir).status().message()),
              HasSubstr("generation_config.json: not valid JSON"));
}

}  // namespace
}  // namespace tandem
