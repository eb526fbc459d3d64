#include <string>
#include <utility>
#include <vector>

#include "common/model/model_config.h"
#include "common/model/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/model/safetensors_writer.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;
using testing::MakeSafetensors;
using testing::TestTensor;
using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// Every tensor a Llama checkpoint holds, with its shape.
Shapes ExpectedLlamaTensors(const ModelConfig& c) {
  int64_t q_rows = c.num_heads * c.head_dim;
  int64_t kv_rows = c.num_kv_heads * c.head_dim;
  Shapes shapes = {{"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}},
                   {"model.norm.weight", {c.hidden_size}}};
  if (!c.tie_word_embeddings) shapes.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    shapes.push_back({p + "input_layernorm.weight", {c.hidden_size}});
    shapes.push_back({p + "post_attention_layernorm.weight", {c.hidden_size}});
    shapes.push_back({p + "self_attn.q_proj.weight", {q_rows, c.hidden_size}});
    shapes.push_back({p + "self_attn.k_proj.weight", {kv_rows, c.hidden_size}});
    shapes.push_back({p + "self_attn.v_proj.weight", {kv_rows, c.hidden_size}});
    shapes.push_back({p + "self_attn.o_proj.weight", {c.hidden_size, q_rows}});
    shapes.push_back({p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size}});
    shapes.push_back({p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size}});
    shapes.push_back({p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size}});
  }
  return shapes;
}

void ExpectFixtureLoads(const std::string& model, DType dtype) {
  std::string dir = testing::FixturePath("models/" + model);
  absl::StatusOr<ModelConfig> config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<std::unique_ptr<WeightStore>> store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  Shapes expected = ExpectedLlamaTensors(*config);
  size_t expected_bytes = 0;
  for (const auto& [name, shape] : expected) {
    absl::StatusOr<const TensorView*> tensor = (*store)->Get(name, shape);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ((*tensor)->dtype, dtype) << name;
    expected_bytes += (*tensor)->data.size();
  }
  EXPECT_EQ((*store)->Names().size(), expected.size());
  EXPECT_EQ((*store)->TotalBytes(), expected_bytes);
  EXPECT_EQ((*store)->Has("lm_head.weight"), !config->tie_word_embeddings);
}

TEST(WeightStoreFixtureTest, Llama3TinySingleFileBf16Tied) {
  ExpectFixtureLoads("llama3-tiny", DType::kBF16);
}

TEST(WeightStoreFixtureTest, Llama2TinyShardedF16Untied) {
  ExpectFixtureLoads("llama2-tiny", DType::kF16);
}

TEST(WeightStoreTest, GetReportsMissingTensorAndShapeMismatch) {
  absl::StatusOr<std::unique_ptr<WeightStore>> store =
      WeightStore::Open(testing::FixturePath("models/llama3-tiny"));
  ASSERT_TRUE(store.ok());
  absl::StatusOr<const TensorView*> missing = (*store)->Get("lm_head.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("\"lm_head.weight\""));
  std::vector<int64_t> wrong = {128, 1024};
  absl::StatusOr<const TensorView*> mismatched = (*store)->Get("model.embed_tokens.weight", wrong);
  EXPECT_EQ(mismatched.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mismatched.status().message()),
              HasSubstr("has shape [1024, 128], expected [128, 1024]"));
}

// A two-shard model directory written by the test writer.
class ShardedDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("sharded");
    WriteShard("a.safetensors", {"x", "y"});
    WriteShard("b.safetensors", {"z"});
  }
  void WriteShard(const std::string& file, const std::vector<std::string>& names) {
    std::vector<float> values = {1, 2};
    std::vector<TestTensor> tensors;
    for (const std::string& name : names) {
      tensors.push_back({name, "F32", {2}, testing::F32Bytes(values)});
    }
    testing::WriteFile(dir_ + "/" + file, MakeSafetensors(tensors));
  }
  void WriteIndex(const nlohmann::json& weight_map) {
    nlohmann::json index = {{"metadata", {{"total_size", 24}}}, {"weight_map", weight_map}};
    testing::WriteFile(dir_ + "/model.safetensors.index.json", index.dump());
  }
  std::string OpenError() {
    absl::StatusOr<std::unique_ptr<WeightStore>> store = WeightStore::Open(dir_);
    EXPECT_FALSE(store.ok());
    return std::string(store.status().message());
  }
  nlohmann::json ValidMap() {
    return {{"x", "a.safetensors"}, {"y", "a.safetensors"}, {"z", "b.safetensors"}};
  }
  std::string dir_;
};

TEST_F(ShardedDirTest, OpensEachShardOnce) {
  WriteIndex(ValidMap());
  absl::StatusOr<std::unique_ptr<WeightStore>> store = WeightStore::Open(dir_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_THAT((*store)->Names(), ::testing::ElementsAre("x", "y", "z"));
  EXPECT_EQ((*store)->TotalBytes(), 24u);
}

TEST_F(ShardedDirTest, MissingShardIsNotFound) {
  nlohmann::json map = ValidMap();
  map["z"] = "c.safetensors";
  WriteIndex(map);
  absl::StatusOr<std::unique_ptr<WeightStore>> store = WeightStore::Open(dir_);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("shard \"c.safetensors\""));
}

TEST_F(ShardedDirTest, RejectsShardPathsOutsideTheDirectory) {
  for (const char* shard : {"../evil.safetensors", "/etc/passwd", "sub/a.safetensors", "..", ""}) {
    nlohmann::json map = ValidMap();
    map["z"] = shard;
    WriteIndex(map);
    EXPECT_THAT(OpenError(), HasSubstr("is not a plain file name inside the model directory"))
        << shard;
  }
  nlohmann::json map = ValidMap();
  map["z"] = 3;
  WriteIndex(map);
  EXPECT_THAT(OpenError(), HasSubstr("weight_map[\"z\"] = 3"));
}

TEST_F(ShardedDirTest, RejectsTensorMissingFromItsShard) {
  nlohmann::json map = ValidMap();
  map["w"] = "b.safetensors";
  WriteIndex(map);
  EXPECT_THAT(OpenError(), HasSubstr("tensor \"w\" is mapped to shard \"b.safetensors\", which "
                                     "does not contain it"));
}

TEST_F(ShardedDirTest, RejectsDuplicateTensorAcrossShards) {
  WriteShard("b.safetensors", {"z", "x"});
  WriteIndex(ValidMap());
  EXPECT_THAT(OpenError(), HasSubstr("tensor \"x\" was already loaded from another shard"));
}

TEST_F(ShardedDirTest, RejectsMalformedIndex) {
  testing::WriteFile(dir_ + "/model.safetensors.index.json", "{");
  EXPECT_THAT(OpenError(), HasSubstr("model.safetensors.index.json: not valid JSON"));
  testing::WriteFile(dir_ + "/model.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_THAT(OpenError(), HasSubstr("weight_map must be a non-empty object"));
}

TEST_F(ShardedDirTest, BrokenShardErrorNamesIndexAndShard) {
  testing::WriteFile(dir_ + "/b.safetensors", "junk");
  WriteIndex(ValidMap());
  std::string message = OpenError();
  EXPECT_THAT(message, HasSubstr("shard \"b.safetensors\""));
  EXPECT_THAT(message, HasSubstr("shorter than the 8-byte header length"));
}

TEST(WeightStoreTest, EmptyDirIsNotFoundNamingBothFiles) {
  absl::StatusOr<std::unique_ptr<WeightStore>> store =
      WeightStore::Open(testing::MakeTempDir("empty"));
  EXPECT_EQ(store.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(store.status().message()),
              HasSubstr("neither model.safetensors nor model.safetensors.index.json exists"));
}

TEST(WeightStoreTest, SingleFileWinsOverIndex) {
  std::string dir = testing::MakeTempDir("both");
  std::vector<float> values = {1, 2};
  testing::WriteFile(dir + "/model.safetensors",
                     MakeSafetensors({{"w", "F32", {2}, testing::F32Bytes(values)}}));
  testing::WriteFile(dir + "/model.safetensors.index.json", "not read");
  absl::StatusOr<std::unique_ptr<WeightStore>> store = WeightStore::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_TRUE((*store)->Has("w"));
}

}  // namespace
}  // namespace tandem
