// Every CUDA kernel against its CPU reference (common/backend/reference/) on fresh random
// bf16 inputs of several sizes, odd ones included, with poisoned outputs.
#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <tuple>

#include "common/backend/cuda/kernels/add_rms_norm.h"
#include "common/backend/cuda/kernels/decode_attention.h"
#include "common/backend/cuda/kernels/embedding.h"
#include "common/backend/cuda/kernels/prefill_attention.h"
#include "common/backend/cuda/kernels/rope_kv_write.h"
#include "common/backend/cuda/kernels/silu_mul.h"
#include "common/backend/model_runner.h"
#include "common/backend/reference/activation.h"
#include "common/backend/reference/paged_attention.h"
#include "common/backend/reference/rms_norm.h"
#include "common/backend/reference/rope.h"
#include "tests/common/backend/cuda/cuda_test_util.h"

namespace tandem {
namespace {

using testing::AsBf16;
using testing::DeviceArray;
using testing::RandomBf16;
using testing::RelativeError;
using testing::Widen;

using testing::Bf16Result;
using testing::kBf16Tolerance;
using testing::kF32Tolerance;

class KernelTest : public testing::GpuTest {};

TEST_F(KernelTest, EmbeddingGatherMatchesReference) {
  for (auto [vocab, dim, tokens] : {std::tuple{1000, 96, 7}, {517, 4096, 33}, {50, 13, 5}}) {
    SCOPED_TRACE(::testing::Message() << "vocab " << vocab << " dim " << dim);
    std::vector<uint16_t> table = RandomBf16(size_t(vocab) * dim, rng_);
    std::vector<int32_t> ids(tokens);
    for (int32_t& id : ids) id = std::uniform_int_distribution<int32_t>(0, vocab - 1)(rng_);
    std::vector<float> want(size_t(tokens) * dim);
    reference::EmbeddingGather(Widen(table), dim, ids, want);

    DeviceArray<uint16_t> d_table(table);
    DeviceArray<int32_t> d_ids(ids);
    auto out_f32 = DeviceArray<float>::Poisoned(want.size());
    auto out_bf16 = DeviceArray<uint16_t>::Poisoned(want.size());
    EmbeddingGatherArgs args{.table = AsBf16(d_table.get()), .token_ids = d_ids.get(),
                             .vocab_size = vocab, .dim = dim, .num_tokens = tokens};
    ASSERT_TRUE(LaunchEmbeddingGather(args, out_f32.get(), nullptr).ok());
    ASSERT_TRUE(LaunchEmbeddingGather(args, reinterpret_cast<__nv_bfloat16*>(out_bf16.get()),
                                      nullptr).ok());
    EXPECT_EQ(out_f32.Download(), want);  // a copy: exact
    EXPECT_EQ(Bf16Result(out_bf16), want);
  }
}

// The runner's row gather (the logits rows through the last layer): exact copies of the
// named rows, 16-byte or byte-wise, in the order named.
TEST_F(KernelTest, GatherRowsCopiesTheNamedRows) {
  for (auto [rows, width, picks] :
       {std::tuple{9, 4096, std::vector<int32_t>{0, 3, 8}}, {5, 13, std::vector<int32_t>{4, 1}},
        {40, 96, std::vector<int32_t>{39}}, {6, 24, std::vector<int32_t>{0, 1, 2, 3, 4, 5}}}) {
    SCOPED_TRACE(::testing::Message() << "rows " << rows << " width " << width);
    std::vector<float> in = Widen(RandomBf16(size_t(rows) * width, rng_));
    std::vector<float> want;
    for (int32_t r : picks) {
      want.insert(want.end(), in.begin() + r * width, in.begin() + (r + 1) * width);
    }
    DeviceArray<float> d_in(in);
    DeviceArray<int32_t> d_rows(picks);
    auto out = DeviceArray<float>::Poisoned(want.size());
    ASSERT_TRUE(LaunchGatherRows({.in = d_in.get(), .rows = d_rows.get(), .out = out.get(),
                                  .num_rows = static_cast<int64_t>(picks.size()),
                                  .row_bytes = width * 4},
                                 nullptr).ok());
    EXPECT_EQ(out.Download(), want);
  }
  EXPECT_EQ(LaunchGatherRows({.num_rows = 1, .row_bytes = 0}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchGatherRows({.num_rows = 1, .row_bytes = 16}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// Fed ids become the sampled tokens of their rows (records of 4 ints, token first, like
// the sampler's results); plain ids stay; 300 tokens span two blocks.
TEST_F(KernelTest, ResolveFedTokensReadsTheSampledRows) {
  constexpr int64_t kStride = 4;
  std::vector<int32_t> sampled(7 * kStride, -99);
  for (int32_t r = 0; r < 7; ++r) sampled[r * kStride] = 1000 + r;
  std::vector<int32_t> ids(300), want(300);
  for (int32_t t = 0; t < 300; ++t) {
    ids[t] = t % 3 == 0 ? FedTokenId(t % 7) : t;
    want[t] = t % 3 == 0 ? 1000 + t % 7 : t;
  }
  DeviceArray<int32_t> d_ids(ids), d_sampled(sampled);
  ASSERT_TRUE(LaunchResolveFedTokens({.token_ids = d_ids.get(), .num_tokens = 300,
                                      .sampled = d_sampled.get(), .sampled_stride = kStride},
                                     nullptr).ok());
  EXPECT_EQ(d_ids.Download(), want);
  EXPECT_EQ(LaunchResolveFedTokens({.num_tokens = 1}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchResolveFedTokens({.num_tokens = 1, .sampled_stride = 0}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelTest, AddRmsNormMatchesReference) {
  // 96, 4096, 1000: the float4 kernel (row in registers); 13: the scalar one; 16384: too long
  // for the registers, the scalar one.
  for (auto [rows, dim, add] : {std::tuple{1, 96, true}, {7, 4096, true}, {33, 1000, false},
                                {5, 13, true}, {3, 16384, true}}) {
    SCOPED_TRACE(::testing::Message() << "rows " << rows << " dim " << dim << " add " << add);
    const size_t n = size_t(rows) * dim;
    std::vector<float> residual = Widen(RandomBf16(n, rng_, 4.0f));
    std::vector<uint16_t> x = RandomBf16(n, rng_), weight = RandomBf16(dim, rng_);
    std::vector<float> want_residual = residual, want_out(n);
    if (add) {
      reference::AddRmsNorm(want_residual, Widen(x), Widen(weight), 1e-5f, dim, want_out);
    } else {
      reference::RmsNorm(want_residual, Widen(weight), 1e-5f, dim, want_out);
    }
    DeviceArray<float> d_residual(residual);
    DeviceArray<uint16_t> d_x(x), d_weight(weight);
    auto d_out = DeviceArray<uint16_t>::Poisoned(n);
    ASSERT_TRUE(LaunchAddRmsNorm({.residual = d_residual.get(),
                                  .x = add ? AsBf16(d_x.get()) : nullptr,
                                  .weight = AsBf16(d_weight.get()),
                                  .out = reinterpret_cast<__nv_bfloat16*>(d_out.get()),
                                  .num_rows = rows, .dim = dim, .eps = 1e-5f},
                                 nullptr).ok());
    EXPECT_LE(RelativeError(d_residual.Download(), want_residual), kF32Tolerance);
    EXPECT_LE(RelativeError(Bf16Result(d_out), want_out), kBf16Tolerance);
  }
}

// Each row [2 * half] as (x[j], x[half + j]) pairs: gate then up to the interleaved layout.
template <typename T>
std::vector<T> InterleaveHalves(const std::vector<T>& rows, int64_t row_size) {
  std::vector<T> out(rows.size());
  const int64_t half = row_size / 2;
  for (size_t r = 0; r < rows.size() / row_size; ++r) {
    for (int64_t j = 0; j < half; ++j) {
      out[r * row_size + 2 * j] = rows[r * row_size + j];
      out[r * row_size + 2 * j + 1] = rows[r * row_size + half + j];
    }
  }
  return out;
}

TEST_F(KernelTest, SiluMulMatchesReference) {
  for (auto [rows, dim] : {std::pair{1, 256}, {7, 14336}, {3, 13}, {9, 100}}) {
    SCOPED_TRACE(::testing::Message() << "rows " << rows << " dim " << dim);
    // The reference takes each row as gate then up; the kernel (gate, up) pairs.
    std::vector<uint16_t> gate_up = RandomBf16(size_t(rows) * 2 * dim, rng_, 4.0f);
    std::vector<float> want(size_t(rows) * dim);
    reference::SiluMul(Widen(gate_up), dim, want);
    DeviceArray<uint16_t> d_gate_up(InterleaveHalves(gate_up, 2 * dim));
    auto d_out = DeviceArray<uint16_t>::Poisoned(want.size());
    ASSERT_TRUE(LaunchSiluMul({.gate_up = AsBf16(d_gate_up.get()),
                               .out = reinterpret_cast<__nv_bfloat16*>(d_out.get()),
                               .num_rows = rows, .dim = dim},
                              nullptr).ok());
    EXPECT_LE(RelativeError(Bf16Result(d_out), want), kBf16Tolerance);
  }
}

// A shuffled pool of KV blocks, its fp32 mirror for the reference, and block tables.
struct KvFixture {
  int64_t num_blocks, block_size, kv_heads, dim;
  std::vector<uint16_t> k, v;  // [slots][kv_heads][dim]
  std::vector<int32_t> free_blocks;

  KvFixture(int64_t blocks, int64_t bs, int64_t heads, int64_t d, std::mt19937& rng)
      : num_blocks(blocks), block_size(bs), kv_heads(heads), dim(d) {
    k = RandomBf16(size_t(blocks * bs * heads * d), rng);
    v = RandomBf16(size_t(blocks * bs * heads * d), rng);
    free_blocks.resize(blocks);
    std::iota(free_blocks.begin(), free_blocks.end(), 0);
    std::shuffle(free_blocks.begin(), free_blocks.end(), rng);
  }
  std::vector<int32_t> Take(int64_t tokens) {
    int64_t count = (tokens + block_size - 1) / block_size;
    std::vector<int32_t> out(free_blocks.end() - count, free_blocks.end());
    free_blocks.resize(free_blocks.size() - count);
    return out;
  }
};

TEST_F(KernelTest, RopeKvWriteMatchesReference) {
  // head_dim / 2 a multiple of 8: 16-byte accesses; 12: one element at a time.
  for (auto [tokens, heads, kv_heads, dim] : {std::tuple{5, 4, 2, 32}, {17, 32, 8, 128},
                                              {3, 3, 3, 64}, {4, 2, 1, 12}}) {
    SCOPED_TRACE(::testing::Message() << "tokens " << tokens << " heads " << heads);
    ModelConfig config{.hidden_size = heads * dim, .num_heads = heads, .num_kv_heads = kv_heads,
                       .head_dim = dim, .rope_theta = 500000.0f};
    config.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 8.0f,
                           .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                           .original_max_position_embeddings = 8192};
    std::vector<float> inv_freq = reference::RopeInverseFrequencies(config);
    const int64_t num_slots = 4 * tokens + 16, q_dim = heads * dim, kv_dim = kv_heads * dim;
    std::vector<uint16_t> qkv = RandomBf16(size_t(tokens) * (q_dim + 2 * kv_dim), rng_);
    std::vector<int32_t> positions(tokens), slots(num_slots);
    for (int32_t& p : positions) p = std::uniform_int_distribution<int32_t>(0, 9000)(rng_);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng_);
    slots.resize(tokens);
    // reference: split qkv, rotate q and k, write k and v into a cache that starts poisoned
    std::vector<float> flat = Widen(qkv), q(tokens * q_dim), k(tokens * kv_dim), v(tokens * kv_dim);
    for (int64_t t = 0; t < tokens; ++t) {
      const float* row = flat.data() + t * (q_dim + 2 * kv_dim);
      std::copy_n(row, q_dim, q.begin() + t * q_dim);
      std::copy_n(row + q_dim, kv_dim, k.begin() + t * kv_dim);
      std::copy_n(row + q_dim + kv_dim, kv_dim, v.begin() + t * kv_dim);
    }
    reference::ApplyRope(q, heads, dim, positions, inv_freq);
    reference::ApplyRope(k, kv_heads, dim, positions, inv_freq);
    std::vector<float> want_k(num_slots * kv_dim, NAN), want_v(num_slots * kv_dim, NAN);
    reference::WriteKv(k, v, slots, {.k = want_k.data(), .v = want_v.data(),
                                     .num_slots = num_slots, .num_kv_heads = kv_heads,
                                     .head_dim = dim});

    DeviceArray<uint16_t> d_qkv(qkv);
    DeviceArray<int32_t> d_positions(positions), d_slots(slots);
    DeviceArray<float> d_inv_freq(inv_freq);
    auto d_q = DeviceArray<uint16_t>::Poisoned(q.size());
    auto d_k = DeviceArray<uint16_t>::Poisoned(want_k.size());
    auto d_v = DeviceArray<uint16_t>::Poisoned(want_v.size());
    PagedKvCache cache{.k = reinterpret_cast<__nv_bfloat16*>(d_k.get()),
                       .v = reinterpret_cast<__nv_bfloat16*>(d_v.get()), .num_slots = num_slots,
                       .num_kv_heads = int32_t(kv_heads), .head_dim = int32_t(dim)};
    ASSERT_TRUE(LaunchRopeKvWrite({.qkv = AsBf16(d_qkv.get()),
                                   .q_out = reinterpret_cast<__nv_bfloat16*>(d_q.get()),
                                   .positions = d_positions.get(), .slot_mapping = d_slots.get(),
                                   .inv_freq = d_inv_freq.get(), .num_tokens = tokens,
                                   .num_heads = int32_t(heads), .cache = cache},
                                  nullptr).ok());
    EXPECT_LE(RelativeError(Bf16Result(d_q), q), kBf16Tolerance);
    std::vector<float> got_k = Bf16Result(d_k), got_v = Bf16Result(d_v);
    std::vector<float> written_k, written_v, want_written_k, want_written_v;
    for (int64_t s = 0; s < num_slots; ++s) {
      bool written = std::find(slots.begin(), slots.end(), s) != slots.end();
      for (int64_t i = s * kv_dim; i < (s + 1) * kv_dim; ++i) {
        if (!written) {
          ASSERT_TRUE(std::isnan(got_k[i]) && std::isnan(got_v[i])) << "slot " << s << " touched";
          continue;
        }
        written_k.push_back(got_k[i]);
        want_written_k.push_back(want_k[i]);
        written_v.push_back(got_v[i]);
        want_written_v.push_back(want_v[i]);
      }
    }
    EXPECT_LE(RelativeError(written_k, want_written_k), kBf16Tolerance);
    EXPECT_EQ(written_v, want_written_v);  // a copy: exact
  }
}

struct AttentionCase {
  int64_t heads, kv_heads, dim;
  std::vector<int32_t> query_lens, context_lens;  // per sequence; context includes the queries
  int32_t num_splits = 0;
  int64_t block_size = 16;  // tokens per KV block
};

// Runs the reference over random q and a random paged cache, then the kernel.
void CheckAttention(const AttentionCase& c, bool decode, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "heads " << c.heads << "/" << c.kv_heads << " dim " << c.dim
                                    << " seqs " << c.context_lens.size() << " splits "
                                    << c.num_splits << " block size " << c.block_size);
  const int64_t block_size = c.block_size, num_seqs = int64_t(c.context_lens.size());
  int64_t total_blocks = 0, num_tokens = 0, max_context = 0;
  for (int32_t len : c.context_lens) total_blocks += (len + block_size - 1) / block_size + 1;
  for (int32_t len : c.query_lens) num_tokens += len;
  for (int32_t len : c.context_lens) max_context = std::max<int64_t>(max_context, len);
  // Under compute-sanitizer (scripts/gpu_check.sh sets this) the long cases take minutes.
  if (std::getenv("TANDEM_SANITIZER_SMALL_CASES") != nullptr && num_tokens > 1024) return;
  KvFixture kv(total_blocks + 3, block_size, c.kv_heads, c.dim, rng);
  std::vector<std::vector<int32_t>> tables;
  std::vector<int32_t> query_start{0}, positions;
  int64_t max_blocks = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    tables.push_back(kv.Take(c.context_lens[s]));
    max_blocks = std::max<int64_t>(max_blocks, int64_t(tables.back().size()));
    for (int32_t i = 0; i < c.query_lens[s]; ++i) {
      positions.push_back(c.context_lens[s] - c.query_lens[s] + i);
    }
    query_start.push_back(query_start.back() + c.query_lens[s]);
  }
  // Slots no sequence holds up to its context (the ends of last blocks, free blocks) are NaN:
  // a kernel that lets one reach an output (0 · NaN in P·V) fails.
  {
    std::vector<bool> live(size_t(kv.num_blocks * block_size), false);
    for (int64_t s = 0; s < num_seqs; ++s) {
      for (int32_t p = 0; p < c.context_lens[s]; ++p) {
        live[size_t(tables[s][p / block_size] * block_size + p % block_size)] = true;
      }
    }
    const size_t row = size_t(c.kv_heads * c.dim);
    for (size_t slot = 0; slot < live.size(); ++slot) {
      if (live[slot]) continue;
      std::fill_n(kv.k.begin() + slot * row, row, uint16_t{0x7fc0});
      std::fill_n(kv.v.begin() + slot * row, row, uint16_t{0x7fc0});
    }
  }
  std::vector<int32_t> flat_tables(num_seqs * max_blocks, 0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    std::copy(tables[s].begin(), tables[s].end(), flat_tables.begin() + s * max_blocks);
  }
  std::vector<uint16_t> q = RandomBf16(size_t(num_tokens * c.heads * c.dim), rng, 2.0f);
  std::vector<float> k_f32 = Widen(kv.k), v_f32 = Widen(kv.v), want(q.size());
  std::vector<std::span<const int32_t>> table_spans(tables.begin(), tables.end());
  const float scale = 1.0f / std::sqrt(float(c.dim));
  reference::PagedAttention(Widen(q), c.heads, query_start, table_spans, positions, block_size,
                            {.k = k_f32.data(), .v = v_f32.data(),
                             .num_slots = kv.num_blocks * block_size,
                             .num_kv_heads = c.kv_heads, .head_dim = c.dim},
                            scale, want);

  DeviceArray<uint16_t> d_q(q), d_k(kv.k), d_v(kv.v);
  DeviceArray<int32_t> d_tables(flat_tables), d_query_start(query_start), d_positions(positions);
  auto d_out = DeviceArray<uint16_t>::Poisoned(q.size());
  PagedKvCache cache{.k = reinterpret_cast<__nv_bfloat16*>(d_k.get()),
                     .v = reinterpret_cast<__nv_bfloat16*>(d_v.get()),
                     .num_slots = kv.num_blocks * block_size, .num_kv_heads = int32_t(c.kv_heads),
                     .head_dim = int32_t(c.dim), .block_size = int32_t(block_size)};
  auto* out = reinterpret_cast<__nv_bfloat16*>(d_out.get());
  if (decode) {
    DeviceArray<int32_t> d_context(c.context_lens);
    absl::Status status = LaunchDecodeAttention(
        {.q = AsBf16(d_q.get()), .out = out, .context_lens = d_context.get(),
         .block_tables = d_tables.get(), .num_seqs = int32_t(num_seqs),
         .num_heads = int32_t(c.heads), .max_blocks_per_seq = int32_t(max_blocks),
         .max_context_len = int32_t(max_context), .scale = scale, .cache = cache,
         .num_splits = c.num_splits},
        nullptr);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_LE(RelativeError(Bf16Result(d_out), want), kBf16Tolerance);
    return;
  }
  // Every block shape of the prefill kernel against the same reference.
  const int32_t group = int32_t(c.heads / c.kv_heads);
  for (PrefillTiling tiling : {PrefillTiling::kRows64Warps4, PrefillTiling::kRows128Warps4,
                               PrefillTiling::kRows128Wgmma}) {
    SCOPED_TRACE(::testing::Message() << "tiling " << static_cast<int>(tiling));
    std::vector<int32_t> tiles =
        BuildPrefillTiles(query_start.data(), int32_t(num_seqs), group, PrefillRowsPerTile(tiling));
    DeviceArray<int32_t> d_tiles(tiles);
    auto d_prefill_out = DeviceArray<uint16_t>::Poisoned(q.size());
    absl::Status status =
        LaunchPrefillAttention({.q = AsBf16(d_q.get()),
                                .out = reinterpret_cast<__nv_bfloat16*>(d_prefill_out.get()),
                                .positions = d_positions.get(),
                                .query_start = d_query_start.get(),
                                .block_tables = d_tables.get(),
                                .tiles = d_tiles.get(),
                                .num_tiles = int32_t(tiles.size() / 2),
                                .num_heads = int32_t(c.heads),
                                .max_blocks_per_seq = int32_t(max_blocks),
                                .scale = scale,
                                .cache = cache,
                                .tiling = tiling},
                               nullptr);
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_LE(RelativeError(Bf16Result(d_prefill_out), want), kBf16Tolerance);
  }
}

TEST_F(KernelTest, DecodeAttentionMatchesReference) {
  std::vector<AttentionCase> cases = {
      {4, 2, 32, {1, 1, 1}, {1, 17, 100}},
      {32, 8, 128, {1}, {2048}},                     // batch 1, long: split-K clusters
      {32, 8, 128, {1}, {1999}, 8},                  // the portable cluster size
      {32, 8, 128, {1, 1}, {6000, 333}, DecodeAttentionMaxSplits()},  // long, empty splits
      {32, 8, 128, {1, 1, 1, 1, 1}, {5, 700, 64, 1023, 129}},
      {3, 3, 64, {1, 1}, {33, 300}, 1},              // MHA, no split
      {8, 1, 64, {1, 1}, {513, 77}, 3},              // MQA (group 8), forced splits
      {6, 2, 128, {1, 1, 1}, {1000, 1, 250}, 7},     // group 3
      {16, 1, 64, {1, 1}, {70, 3}, 2},              // group 16 (both mma row halves)
      {32, 8, 128, {1, 1, 1, 1}, {2048, 129, 1, 4000}, 5},  // an odd cluster size
  };
  // more splits than tiles: every split past the third is empty
  cases.push_back({32, 8, 128, {1, 1}, {129, 40}, DecodeAttentionMaxSplits()});
  // more than two single-split blocks per SM (H200: 132 SMs): the 2-warp blocks
  std::vector<int32_t> many(40);
  for (size_t i = 0; i < many.size(); ++i) many[i] = int32_t(1 + (i * 397) % 1500);
  cases.push_back({32, 8, 128, std::vector<int32_t>(many.size(), 1), many, 1});
  cases.push_back({8, 8, 64, std::vector<int32_t>(many.size(), 1), many, 0});
  cases.push_back({8, 2, 64, {1}, {150}, DecodeAttentionMaxSplits()});
  // batch-8-like split launches: 8 splits forced (more clusters than SMs), and 12 sequences
  // with the automatic split count
  std::vector<int32_t> eight(8), twelve(12);
  for (size_t i = 0; i < eight.size(); ++i) eight[i] = int32_t(300 + (i * 523) % 1800);
  for (size_t i = 0; i < twelve.size(); ++i) twelve[i] = int32_t(1 + (i * 701) % 2100);
  cases.push_back({32, 8, 128, std::vector<int32_t>(eight.size(), 1), eight, 8});
  cases.push_back({32, 8, 128, std::vector<int32_t>(twelve.size(), 1), twelve, 0});
  for (const AttentionCase& c : cases) CheckAttention(c, /*decode=*/true, rng_);
}

// The decode kernel with RoPE + KV write fused in against LaunchRopeKvWrite followed by
// the plain decode kernel: the same cache contents and outputs. Each step's new slot starts
// poisoned in both caches, so a write or a tile row the fused kernel missed shows as NaN.
TEST_F(KernelTest, DecodeAttentionFusedRopeMatchesRopeThenAttention) {
  struct Case {
    int64_t heads, kv_heads, dim;
    std::vector<int32_t> context_lens;  // 0: a padding row (slot -1)
    int32_t num_splits = 0;
  };
  std::vector<Case> cases = {
      {32, 8, 128, {2048}},                  // batch 1: 16 splits, the new token in the last
      {32, 8, 128, {1, 64, 65, 700, 0}},     // tile edges, a padding row
      {32, 8, 128, {1999, 129, 1}, 7},       // an odd cluster size, empty splits
      {4, 2, 32, {17, 100}, 3},
      {3, 3, 64, {33, 300}, 1},              // MHA, no split
      {16, 1, 64, {70, 3}, 2},               // group 16
      {6, 2, 128, {1000, 250}, 0},
  };
  std::vector<int32_t> many(40);  // 320 single-split blocks: the 2-warp kernel
  for (size_t i = 0; i < many.size(); ++i) many[i] = int32_t(i == 7 ? 0 : 1 + (i * 397) % 1500);
  cases.push_back({32, 8, 128, many, 1});
  ModelConfig config{.num_heads = 32, .num_kv_heads = 8, .head_dim = 128,
                     .rope_theta = 500000.0f};
  config.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 8.0f,
                         .low_freq_factor = 1.0f, .high_freq_factor = 4.0f,
                         .original_max_position_embeddings = 8192};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "heads " << c.heads << "/" << c.kv_heads << " dim "
                                      << c.dim << " seqs " << c.context_lens.size()
                                      << " splits " << c.num_splits);
    config.num_heads = c.heads;
    config.num_kv_heads = c.kv_heads;
    config.head_dim = c.dim;
    config.hidden_size = c.heads * c.dim;
    const std::vector<float> inv_freq = reference::RopeInverseFrequencies(config);
    const int64_t block_size = 16, num_seqs = int64_t(c.context_lens.size());
    const int64_t kv_dim = c.kv_heads * c.dim, row = (c.heads + 2 * c.kv_heads) * c.dim;
    int64_t total_blocks = 0, max_blocks = 1, max_context = 1;
    for (int32_t len : c.context_lens) total_blocks += (len + block_size - 1) / block_size;
    KvFixture kv(total_blocks + 2, block_size, c.kv_heads, c.dim, rng_);
    std::vector<std::vector<int32_t>> tables;
    std::vector<int32_t> positions, slots;
    for (int32_t len : c.context_lens) {
      tables.push_back(kv.Take(len));
      max_blocks = std::max<int64_t>(max_blocks, int64_t(tables.back().size()));
      max_context = std::max<int64_t>(max_context, len);
      positions.push_back(std::max(len - 1, 0));
      slots.push_back(len == 0 ? -1 : tables.back()[(len - 1) / block_size] * block_size +
                                          (len - 1) % block_size);
    }
    for (int32_t slot : slots) {
      if (slot < 0) continue;
      std::fill_n(kv.k.begin() + slot * kv_dim, kv_dim, uint16_t{0xffff});
      std::fill_n(kv.v.begin() + slot * kv_dim, kv_dim, uint16_t{0xffff});
    }
    std::vector<int32_t> flat_tables(num_seqs * max_blocks, 0);
    for (int64_t s = 0; s < num_seqs; ++s) {
      std::copy(tables[s].begin(), tables[s].end(), flat_tables.begin() + s * max_blocks);
    }
    const std::vector<uint16_t> qkv = RandomBf16(size_t(num_seqs * row), rng_, 2.0f);
    DeviceArray<uint16_t> d_qkv(qkv), d_k1(kv.k), d_v1(kv.v), d_k2(kv.k), d_v2(kv.v);
    DeviceArray<int32_t> d_tables(flat_tables), d_context(c.context_lens),
        d_positions(positions), d_slots(slots);
    DeviceArray<float> d_inv_freq(inv_freq);
    auto d_q = DeviceArray<uint16_t>::Poisoned(size_t(num_seqs * c.heads * c.dim));
    auto d_out1 = DeviceArray<uint16_t>::Poisoned(size_t(num_seqs * c.heads * c.dim));
    auto d_out2 = DeviceArray<uint16_t>::Poisoned(size_t(num_seqs * c.heads * c.dim));
    auto cache = [&](DeviceArray<uint16_t>& k, DeviceArray<uint16_t>& v) {
      return PagedKvCache{.k = reinterpret_cast<__nv_bfloat16*>(k.get()),
                          .v = reinterpret_cast<__nv_bfloat16*>(v.get()),
                          .num_slots = kv.num_blocks * block_size,
                          .num_kv_heads = int32_t(c.kv_heads), .head_dim = int32_t(c.dim),
                          .block_size = int32_t(block_size)};
    };
    ASSERT_TRUE(LaunchRopeKvWrite({.qkv = AsBf16(d_qkv.get()),
                                   .q_out = reinterpret_cast<__nv_bfloat16*>(d_q.get()),
                                   .positions = d_positions.get(), .slot_mapping = d_slots.get(),
                                   .inv_freq = d_inv_freq.get(), .num_tokens = num_seqs,
                                   .num_heads = int32_t(c.heads), .cache = cache(d_k1, d_v1)},
                                  nullptr).ok());
    DecodeAttentionArgs args{.q = AsBf16(d_q.get()),
                             .out = reinterpret_cast<__nv_bfloat16*>(d_out1.get()),
                             .context_lens = d_context.get(), .block_tables = d_tables.get(),
                             .num_seqs = int32_t(num_seqs), .num_heads = int32_t(c.heads),
                             .max_blocks_per_seq = int32_t(max_blocks),
                             .max_context_len = int32_t(max_context),
                             .scale = 1.0f / std::sqrt(float(c.dim)), .cache = cache(d_k1, d_v1),
                             .num_splits = c.num_splits};
    ASSERT_TRUE(LaunchDecodeAttention(args, nullptr).ok());
    args.q = nullptr;
    args.qkv = AsBf16(d_qkv.get());
    args.positions = d_positions.get();
    args.slot_mapping = d_slots.get();
    args.inv_freq = d_inv_freq.get();
    args.out = reinterpret_cast<__nv_bfloat16*>(d_out2.get());
    args.cache = cache(d_k2, d_v2);
    ASSERT_TRUE(LaunchDecodeAttention(args, nullptr).ok());
    const std::vector<uint16_t> k1 = d_k1.Download(), k2 = d_k2.Download();
    const std::vector<uint16_t> v1 = d_v1.Download(), v2 = d_v2.Download();
    for (int32_t slot : slots) {
      if (slot < 0) continue;
      for (int64_t i = slot * kv_dim; i < (slot + 1) * kv_dim; ++i) {
        ASSERT_NE(k2[i], 0xffff) << "slot " << slot << " not written";
        ASSERT_NE(v2[i], 0xffff) << "slot " << slot << " not written";
      }
    }
    EXPECT_LE(RelativeError(Widen(k2), Widen(k1)), kBf16Tolerance);
    EXPECT_EQ(v2, v1);
    const std::vector<float> out1 = Bf16Result(d_out1), out2 = Bf16Result(d_out2);
    for (float x : out2) ASSERT_TRUE(std::isfinite(x));
    EXPECT_LE(RelativeError(out2, out1), kBf16Tolerance);
    // Exact where both kernels' RoPE arithmetic compiled alike (reported, not required).
    RecordProperty("bit_identical_k", k1 == k2 ? "yes" : "no");
    RecordProperty("bit_identical_out",
                   d_out1.Download() == d_out2.Download() ? "yes" : "no");
    if (k1 != k2 || d_out1.Download() != d_out2.Download()) {
      std::printf("fused RoPE: not bit-identical (k %d, out %d)\n", k1 == k2,
                  d_out1.Download() == d_out2.Download());
    }
  }
}

TEST_F(KernelTest, PrefillAttentionMatchesReference) {
  const std::vector<AttentionCase> cases = {
      {4, 2, 32, {10}, {10}},
      {32, 8, 128, {300}, {300}},
      {32, 8, 128, {7, 1, 65}, {40, 90, 65}},  // chunks after cached prefixes, a decode row
      {3, 3, 64, {33, 17}, {33, 50}},
      {6, 2, 128, {129, 3}, {200, 3}},
      {8, 1, 64, {20}, {99}},
      {32, 8, 128, {1000}, {1000}},                // the 8B shape, a long prompt
      {32, 8, 128, {100, 1, 1}, {1100, 5, 2000}},  // chunk after a long prefix, decode rows
      {5, 5, 32, {77}, {77}},                      // MHA, odd heads and length
      // block sizes whose blocks split a thread's K/V rows (per-row table lookups)
      {8, 2, 128, {90, 1}, {200, 33}, 0, /*block_size=*/5},
      {8, 2, 128, {70}, {150}, 0, /*block_size=*/4},
      {4, 1, 64, {40}, {130}, 0, /*block_size=*/2},
      // the wgmma kernel's tensor-copy boxes: as large as the block (64), one 128-token tile
      // per box (128, 256), the smallest (8); group 16 (both warpgroups in one token range)
      {32, 8, 128, {300, 77}, {300, 1000}, 0, /*block_size=*/64},
      {8, 2, 128, {129, 5}, {250, 700}, 0, /*block_size=*/128},
      {8, 2, 128, {500}, {777}, 0, /*block_size=*/256},
      {16, 4, 128, {40, 200}, {300, 200}, 0, /*block_size=*/8},
      {16, 1, 128, {90, 1}, {333, 129}},
  };
  for (const AttentionCase& c : cases) CheckAttention(c, /*decode=*/false, rng_);
}

// The tiles of the logits rows: exactly the tiles of the full list that hold a row of a
// named token, in the full list's order (group 3 rows straddle 128-row tiles).
TEST_F(KernelTest, PrefillTilesForTokensAreTheTilesHoldingThem) {
  for (int32_t group : {1, 3, 4, 16}) {
    SCOPED_TRACE(::testing::Message() << "group " << group);
    const std::vector<int32_t> query_start = {0, 100, 101, 400, 1000};
    const std::vector<int32_t> tokens = {0, 42, 99, 100, 142, 143, 399, 999};
    const std::vector<int32_t> all = BuildPrefillTiles(query_start.data(), 4, group);
    std::vector<int32_t> want;
    for (size_t i = 0; i < all.size(); i += 2) {
      bool holds = false;
      for (int32_t token : tokens) {
        int32_t s = 0;
        while (token >= query_start[s + 1]) ++s;
        const int32_t first = (token - query_start[s]) * group;
        holds |= s == all[i] && first < all[i + 1] + kPrefillRowsPerTile &&
                 first + group > all[i + 1];
      }
      if (holds) want.insert(want.end(), {all[i], all[i + 1]});
    }
    EXPECT_EQ(BuildPrefillTilesForTokens(query_start.data(), 4, group, tokens.data(),
                                         static_cast<int32_t>(tokens.size())),
              want);
  }
}

TEST_F(KernelTest, LaunchersRejectBadShapes) {
  EXPECT_EQ(LaunchAddRmsNorm({.num_rows = 2, .dim = 0}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchSiluMul({.num_rows = -1, .dim = 4}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchRopeKvWrite({.num_tokens = 1, .num_heads = 3,
                               .cache = {.num_kv_heads = 2, .head_dim = 32}},
                              nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchDecodeAttention({.num_seqs = 1, .num_heads = 4,
                                   .cache = {.num_kv_heads = 2, .head_dim = 80}},
                                  nullptr).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(LaunchDecodeAttention({.num_seqs = 1, .num_heads = 32,
                                   .cache = {.num_kv_heads = 1, .head_dim = 64}},
                                  nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // group 32 > 16
  EXPECT_GE(DecodeAttentionMaxSplits(), 8);
  EXPECT_EQ(DecodeAttentionNumSplits(1, 8, 2048), DecodeAttentionMaxSplits());
  EXPECT_EQ(DecodeAttentionNumSplits(64, 8, 2048), 1);
  EXPECT_EQ(DecodeAttentionNumSplits(1, 8, 64), 1);  // one tile: nothing to split
  for (int32_t splits : {-1, DecodeAttentionMaxSplits() + 1}) {
    int32_t table = 0, context = 1;
    EXPECT_EQ(LaunchDecodeAttention({.q = reinterpret_cast<const __nv_bfloat16*>(&table),
                                     .out = reinterpret_cast<__nv_bfloat16*>(&table),
                                     .context_lens = &context, .block_tables = &table,
                                     .num_seqs = 1, .num_heads = 4, .max_blocks_per_seq = 1,
                                     .max_context_len = 1,
                                     .cache = {.k = reinterpret_cast<__nv_bfloat16*>(&table),
                                               .v = reinterpret_cast<__nv_bfloat16*>(&table),
                                               .num_kv_heads = 2, .head_dim = 64},
                                     .num_splits = splits},
                                    nullptr).code(),
              absl::StatusCode::kInvalidArgument)
        << splits;
  }
  EXPECT_EQ(LaunchCopyKvBlocks({.num_regions = 2, .region_elements = 4, .block_elements = 8,
                                .num_copies = 1},
                               nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// Padding rows of a CUDA-graph decode batch (context 0) get zeros, the rest the reference.
TEST_F(KernelTest, DecodeAttentionZeroContextRowsAreZero) {
  const int32_t heads = 8, kv_heads = 2, dim = 128, block_size = 16, blocks = 8;
  KvFixture kv(blocks, block_size, kv_heads, dim, rng_);
  std::vector<int32_t> table = kv.Take(100), context{100, 0};
  std::vector<int32_t> tables(2 * table.size(), 0);
  std::copy(table.begin(), table.end(), tables.begin());
  std::vector<uint16_t> q = RandomBf16(size_t(2) * heads * dim, rng_);
  DeviceArray<uint16_t> d_q(q), d_k(kv.k), d_v(kv.v);
  DeviceArray<int32_t> d_tables(tables), d_context(context);
  auto out = DeviceArray<uint16_t>::Poisoned(q.size());
  for (int32_t splits : {1, 3, DecodeAttentionMaxSplits()}) {
    PagedKvCache cache{.k = reinterpret_cast<__nv_bfloat16*>(d_k.get()),
                       .v = reinterpret_cast<__nv_bfloat16*>(d_v.get()),
                       .num_slots = blocks * block_size, .num_kv_heads = kv_heads,
                       .head_dim = dim, .block_size = block_size};
    ASSERT_TRUE(LaunchDecodeAttention(
                    {.q = AsBf16(d_q.get()), .out = reinterpret_cast<__nv_bfloat16*>(out.get()),
                     .context_lens = d_context.get(), .block_tables = d_tables.get(),
                     .num_seqs = 2, .num_heads = heads,
                     .max_blocks_per_seq = int32_t(table.size()), .max_context_len = 112,
                     .scale = 0.1f, .cache = cache, .num_splits = splits},
                    nullptr).ok());
    std::vector<float> got = Widen(out.Download());
    for (size_t i = size_t(heads) * dim; i < got.size(); ++i) ASSERT_EQ(got[i], 0.0f) << i;
    for (size_t i = 0; i < size_t(heads) * dim; ++i) ASSERT_TRUE(std::isfinite(got[i])) << i;
  }
}

// Copy-on-write forks: the named blocks of every region are copied exactly; others untouched.
TEST_F(KernelTest, CopyKvBlocksCopiesEveryRegion) {
  for (auto [regions, block_elements, num_blocks] : {std::tuple{6, 2048, 9}, {3, 13 * 16, 5}}) {
    const int64_t region = int64_t(block_elements) * num_blocks;
    std::vector<uint16_t> cache = RandomBf16(size_t(regions) * region, rng_);
    std::vector<int32_t> pairs{0, 3, 2, 1};  // (src, dst)
    if (num_blocks > 5) pairs.insert(pairs.end(), {8, 5});
    std::vector<uint16_t> want = cache;
    for (int64_t r = 0; r < regions; ++r) {
      for (size_t i = 0; i < pairs.size(); i += 2) {
        std::copy_n(cache.begin() + r * region + pairs[i] * block_elements, block_elements,
                    want.begin() + r * region + pairs[i + 1] * block_elements);
      }
    }
    DeviceArray<uint16_t> d_cache(cache);
    DeviceArray<int32_t> d_pairs(pairs);
    ASSERT_TRUE(LaunchCopyKvBlocks({.cache = reinterpret_cast<__nv_bfloat16*>(d_cache.get()),
                                    .num_regions = regions, .region_elements = region,
                                    .block_elements = block_elements, .pairs = d_pairs.get(),
                                    .num_copies = int32_t(pairs.size() / 2)},
                                   nullptr).ok());
    EXPECT_EQ(d_cache.Download(), want);
  }
}

}  // namespace
}  // namespace tandem
