#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/backend/model_runner.h"
#include "tests/testing/batch_builder.h"

namespace tandem {
namespace {

using ::tandem::testing::BatchBuilder;
using ::tandem::testing::LogitsFor;
using ::testing::HasSubstr;

constexpr int64_t kBlocks = 8, kBlockSize = 4, kMaxPositions = 64, kVocab = 100;

std::string Error(const ForwardInputs& in) {
  return std::string(ValidateForwardInputs(in, kBlocks, kBlockSize, kMaxPositions, kVocab).message());
}

BatchBuilder TwoSequences() {
  BatchBuilder b(kBlockSize);
  std::vector<int32_t> a = {1, 2, 3, 4, 5}, c = {7};
  b.Add(a, 0, {3, 5}, LogitsFor::kLast);
  b.Add(c, 9, {0, 1, 2}, LogitsFor::kLast);
  return b;
}

TEST(ForwardInputsTest, AcceptsMixedPrefillAndDecode) {
  BatchBuilder b = TwoSequences();
  EXPECT_EQ(Error(b.inputs()), "");
}

TEST(ForwardInputsTest, RejectsEachInconsistency) {
  std::vector<int32_t> bad_ids = {1, 2, 3, 4, 5, 100};
  const BatchBuilder valid = TwoSequences();
  ForwardInputs in = valid.inputs();
  in.token_ids = bad_ids;
  EXPECT_THAT(Error(in), HasSubstr("token_ids[5] = 100"));

  in = valid.inputs();
  in.positions = in.positions.first(3);
  EXPECT_THAT(Error(in), HasSubstr("positions has 3 entries"));

  std::vector<int32_t> far = {0, 1, 2, 3, 4, 64};
  in = valid.inputs();
  in.positions = far;
  EXPECT_THAT(Error(in), HasSubstr("outside [0, 64)"));

  std::vector<int32_t> gap = {0, 1, 3, 4, 5, 9};
  in = valid.inputs();
  in.positions = gap;
  EXPECT_THAT(Error(in), HasSubstr("consecutive"));

  std::vector<int32_t> bad_table = {3, 8};
  in = valid.inputs();
  in.block_tables[0] = bad_table;
  EXPECT_THAT(Error(in), HasSubstr("block 8 outside [0, 8)"));

  std::vector<int32_t> short_table = {0, 1};
  in = valid.inputs();
  in.block_tables[1] = short_table;
  EXPECT_THAT(Error(in), HasSubstr("needs 3"));

  std::vector<int32_t> wrong_slots = {12, 13, 14, 15, 20, 0};
  in = valid.inputs();
  in.slot_mapping = wrong_slots;
  EXPECT_THAT(Error(in), HasSubstr("slot_mapping[5]"));

  std::vector<int32_t> rows = {5, 4};
  in = valid.inputs();
  in.logits_rows = rows;
  EXPECT_THAT(Error(in), HasSubstr("ascending"));

  std::vector<int32_t> starts = {0, 6};
  in = valid.inputs();
  in.query_start = starts;
  EXPECT_THAT(Error(in), HasSubstr("num_seqs + 1"));

  in = ForwardInputs{};
  EXPECT_THAT(Error(in), HasSubstr("must not be empty"));
}

}  // namespace
}  // namespace tandem
