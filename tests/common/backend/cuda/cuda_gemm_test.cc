// The GEMMs against the reference: cuBLASLt (both outputs, accumulate, algorithm buckets),
// the batch-1..8 GEMV and the skinny tensor-core GEMM (every tiling or configuration, every
// epilogue, the fused SiLU·mul bit-for-bit), on fresh random bf16 inputs with poisoned
// outputs.
#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>

#include "common/backend/cuda/cublaslt_gemm.h"
#include "common/backend/cuda/kernels/gemv.h"
#include "common/backend/cuda/kernels/silu_mul.h"
#include "common/backend/cuda/kernels/skinny_gemm.h"
#include "common/backend/reference/matmul.h"
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

class GemmTest : public testing::GpuTest {};
using Launch = std::function<absl::Status(const GemmArgs&)>;

// Both outputs and the accumulating epilogue of one shape against the reference.
void CheckGemm(CublasLtGemm& gemm, int64_t m, int64_t n, int64_t k, std::mt19937& rng) {
  SCOPED_TRACE(::testing::Message() << "m " << m << " n " << n << " k " << k);
  std::vector<uint16_t> a = RandomBf16(size_t(m) * k, rng), w = RandomBf16(size_t(n) * k, rng);
  std::vector<float> want(size_t(m) * n);
  reference::MatMulTransposed(Widen(a), m, k, Widen(w), n, want);
  DeviceArray<uint16_t> d_a(a), d_w(w);
  auto out_f32 = DeviceArray<float>::Poisoned(want.size());
  auto out_bf16 = DeviceArray<uint16_t>::Poisoned(want.size());
  GemmArgs args{.a = AsBf16(d_a.get()),
                .w = AsBf16(d_w.get()),
                .out = out_f32.get(),
                .m = m,
                .n = n,
                .k = k,
                .output = GemmOutput::kF32};
  ASSERT_TRUE(gemm.MatMulTransposed(args, nullptr).ok());
  args.out = out_bf16.get();
  args.output = GemmOutput::kBF16;
  ASSERT_TRUE(gemm.MatMulTransposed(args, nullptr).ok());
  EXPECT_LE(RelativeError(out_f32.Download(), want), kF32Tolerance);
  EXPECT_LE(RelativeError(Bf16Result(out_bf16), want), kBf16Tolerance);

  // accumulate: out += a·wᵀ (the residual add fused into the epilogue); the algorithm
  // timing on first use must not add into it
  std::vector<float> initial = Widen(RandomBf16(want.size(), rng, 8.0f)), sum = want;
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += initial[i];
  DeviceArray<float> accumulated(initial);
  args.out = accumulated.get();
  args.output = GemmOutput::kF32;
  args.accumulate = true;
  ASSERT_TRUE(gemm.MatMulTransposed(args, nullptr).ok());
  EXPECT_LE(RelativeError(accumulated.Download(), sum), kF32Tolerance);
  args.output = GemmOutput::kBF16;
  EXPECT_EQ(gemm.MatMulTransposed(args, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GemmTest, GemmMatchesReference) {
  absl::StatusOr<std::unique_ptr<CublasLtGemm>> gemm = CublasLtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status();
  for (auto [m, n, k] : {std::tuple{1, 4096, 1024}, {7, 96, 128}, {33, 1000, 96},
                         {130, 384, 520}, {3, 1024, 8}}) {
    CheckGemm(**gemm, m, n, k, rng_);
  }
}

// Tuned algorithms are shared within an m bucket: the first m of a bucket is timed, later
// ones reuse (or re-check) its choice; without tuning nothing is shared.
TEST_F(GemmTest, GemmAlgorithmBucketsMatchReference) {
  EXPECT_EQ(GemmAlgorithmBucket(64), 64);
  EXPECT_EQ(GemmAlgorithmBucket(65), 80);
  EXPECT_EQ(GemmAlgorithmBucket(100), 112);
  EXPECT_EQ(GemmAlgorithmBucket(600), 640);
  EXPECT_EQ(GemmAlgorithmBucket(2048), 2048);
  EXPECT_EQ(GemmAlgorithmBucket(2049), 2560);
  EXPECT_EQ(GemmAlgorithmBucket(8192), 8192);
  EXPECT_EQ(CublasLtGemm::Create({.max_algorithms = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (int max_algorithms : {1, 16}) {
    SCOPED_TRACE(::testing::Message() << "max_algorithms " << max_algorithms);
    absl::StatusOr<std::unique_ptr<CublasLtGemm>> gemm =
        CublasLtGemm::Create({.max_algorithms = max_algorithms});
    ASSERT_TRUE(gemm.ok()) << gemm.status();
    for (int64_t m : {600, 520, 640, 300, 700, 1100}) CheckGemm(**gemm, m, 768, 264, rng_);
    // buckets 640, 768, 1280 (300 is below kMinTunedRows), each with three epilogues (bf16,
    // fp32, fp32 accumulate)
    EXPECT_EQ((*gemm)->num_tuned_buckets(), max_algorithms == 1 ? 0 : 3 * 3);
  }
  // Decode row counts, timed after L2 flushes; m = 100 is outside the range (not timed).
  absl::StatusOr<std::unique_ptr<CublasLtGemm>> decode =
      CublasLtGemm::Create({.max_algorithms = 16, .min_tuned_rows = 1, .max_tuned_rows = 64});
  ASSERT_TRUE(decode.ok()) << decode.status();
  for (int64_t m : {64, 3, 100}) CheckGemm(**decode, m, 1000, 264, rng_);
  EXPECT_EQ((*decode)->num_tuned_buckets(), 2 * 3);
  EXPECT_EQ(CublasLtGemm::Create({.min_tuned_rows = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CublasLtGemm::Create({.min_tuned_rows = 8, .max_tuned_rows = 4}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// One shape's inputs and reference results, checked against any of our GEMM kernels: fp32
// and bf16 outputs, accumulate-into-output; outputs [m + 1][stride] start poisoned, so a write
// past n (ldc > n) or past row m shows.
struct OwnGemmCase {
  int64_t m, n, k, ldc, stride;
  std::vector<float> product, initial, sum;
  DeviceArray<uint16_t> a, w;

  OwnGemmCase(int64_t m_, int64_t n_, int64_t k_, int64_t ldc_, std::mt19937& rng)
      : m(m_), n(n_), k(k_), ldc(ldc_), stride(ldc_ == 0 ? n_ : ldc_),
        product(size_t(m_) * n_), a(RandomBf16(size_t(m_) * k_, rng)),
        w(RandomBf16(size_t(n_) * k_, rng)) {
    reference::MatMulTransposed(Widen(a.Download()), m, k, Widen(w.Download()), n, product);
    initial = Widen(RandomBf16(product.size(), rng, 8.0f));
    sum = product;
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += initial[i];
  }

  // [m + 1][stride], the first m rows' first n columns from values, the rest poison (NaN).
  std::vector<float> Strided(const std::vector<float>& values) const {
    std::vector<float> out(size_t(m + 1) * stride, NAN);
    for (int64_t i = 0; i < m; ++i) std::copy_n(values.begin() + i * n, n, out.begin() + i * stride);
    return out;
  }
  // The [m][n] results of an output; everything else must still be poison.
  std::vector<float> Valid(const std::vector<float>& values) const {
    std::vector<float> out;
    for (int64_t i = 0; i <= m; ++i) {
      for (int64_t j = i < m ? n : 0; j < stride; ++j) {
        EXPECT_TRUE(std::isnan(values[i * stride + j])) << "wrote past m or n at " << i << "," << j;
      }
      if (i < m) out.insert(out.end(), values.begin() + i * stride, values.begin() + i * stride + n);
    }
    return out;
  }

  void Check(const Launch& launch) const {
    auto out_f32 = DeviceArray<float>::Poisoned(size_t(m + 1) * stride);
    auto out_bf16 = DeviceArray<uint16_t>::Poisoned(size_t(m + 1) * stride);
    GemmArgs args{.a = AsBf16(a.get()), .w = AsBf16(w.get()), .out = out_f32.get(), .m = m,
                  .n = n, .k = k, .ldc = ldc, .output = GemmOutput::kF32};
    ASSERT_TRUE(launch(args).ok());
    args.out = out_bf16.get();
    args.output = GemmOutput::kBF16;
    ASSERT_TRUE(launch(args).ok());
    EXPECT_LE(RelativeError(Valid(out_f32.Download()), product), kF32Tolerance);
    EXPECT_LE(RelativeError(Valid(Bf16Result(out_bf16)), product), kBf16Tolerance);

    DeviceArray<float> accumulated(Strided(initial));
    args.out = accumulated.get();
    args.output = GemmOutput::kF32;
    args.accumulate = true;
    ASSERT_TRUE(launch(args).ok());
    EXPECT_LE(RelativeError(Valid(accumulated.Download()), sum), kF32Tolerance);
  }
};

// The fused SiLU·mul epilogue of one shape against the same kernel's bf16 output followed by
// LaunchSiluMul: the same bits; columns past n / 2 (ldc > n / 2) stay poisoned.
void CheckSiluMulEpilogue(int64_t m, int64_t inter, int64_t k, int64_t ldc,
                          const DeviceArray<uint16_t>& a, const DeviceArray<uint16_t>& w,
                          const Launch& launch) {
  const int64_t n = 2 * inter, stride = ldc == 0 ? inter : ldc;
  auto gate_up = DeviceArray<uint16_t>::Poisoned(size_t(m) * n);
  auto want = DeviceArray<uint16_t>::Poisoned(size_t(m) * inter);
  auto got = DeviceArray<uint16_t>::Poisoned(size_t(m) * stride);
  GemmArgs args{.a = AsBf16(a.get()), .w = AsBf16(w.get()), .out = gate_up.get(), .m = m,
                .n = n, .k = k, .output = GemmOutput::kBF16};
  ASSERT_TRUE(launch(args).ok());
  ASSERT_TRUE(LaunchSiluMul({.gate_up = AsBf16(gate_up.get()),
                             .out = reinterpret_cast<__nv_bfloat16*>(want.get()),
                             .num_rows = m, .dim = inter},
                            nullptr).ok());
  args.out = got.get();
  args.ldc = ldc;
  args.output = GemmOutput::kSiluMulBf16;
  ASSERT_TRUE(launch(args).ok());
  const std::vector<uint16_t> expected = want.Download(), actual = got.Download();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < stride; ++j) {
      const uint16_t value = actual[i * stride + j];
      if (j < inter) {
        ASSERT_EQ(value, expected[i * inter + j]) << "row " << i << " column " << j;
      } else {
        ASSERT_EQ(value, 0xffff) << "wrote past n / 2 at " << i << "," << j;  // poison
      }
    }
  }
}

constexpr GemvTiling kAllTilings[] = {GemvTiling::kAuto, GemvTiling::kRows1, GemvTiling::kRows2,
                                      GemvTiling::kRows4, GemvTiling::kRows8};

// The batch-1..8 GEMV against the reference, every tiling and epilogue, odd n and k, a
// padded ldc.
TEST_F(GemmTest, GemvMatchesReference) {
  for (auto [m, n, k, ldc] : {std::tuple{1, 4096, 1024, 0}, {2, 97, 136, 0}, {3, 1000, 4096, 0},
                              {5, 13, 8, 16}, {8, 333, 2056, 340}, {7, 6144, 4096, 0},
                              {4, 64, 14336, 0}, {1, 4099, 14336, 0}, {1, 7, 2056, 9},
                              {6, 31, 4104, 0}}) {
    const OwnGemmCase c(m, n, k, ldc, rng_);
    for (GemvTiling tiling : kAllTilings) {
      SCOPED_TRACE(::testing::Message() << "m " << m << " n " << n << " k " << k << " ldc " << ldc
                                        << " tiling " << static_cast<int>(tiling));
      c.Check([&](const GemmArgs& args) {
        EXPECT_TRUE(GemvSupports(args));
        return LaunchGemv(args, nullptr, tiling);
      });
    }
  }
  GemmArgs bad{.a = nullptr, .w = nullptr, .out = nullptr, .m = 9, .n = 8, .k = 8};
  EXPECT_FALSE(GemvSupports(bad));
  DeviceArray<uint16_t> d_odd(RandomBf16(3 * 8, rng_));
  GemmArgs odd{.a = AsBf16(d_odd.get()), .w = AsBf16(d_odd.get()), .out = d_odd.get(), .m = 1,
               .n = 3, .k = 8, .output = GemmOutput::kSiluMulBf16};
  EXPECT_FALSE(GemvSupports(odd));  // the fused SiLU·mul needs (gate, up) pairs
  EXPECT_EQ(LaunchGemv(odd, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchGemv(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// The fused SiLU·mul epilogue gives the bits of a bf16 GEMV followed by LaunchSiluMul.
TEST_F(GemmTest, GemvSiluMulMatchesGemvThenSiluMul) {
  for (auto [m, inter, k, ldc] : {std::tuple{1, 14336, 4096, 0}, {2, 6, 136, 0},
                                  {8, 1001, 2056, 1003}, {5, 64, 8, 0}}) {
    DeviceArray<uint16_t> a(RandomBf16(size_t(m) * k, rng_)), w(RandomBf16(size_t(2 * inter) * k, rng_));
    for (GemvTiling tiling : kAllTilings) {
      SCOPED_TRACE(::testing::Message() << "m " << m << " inter " << inter << " k " << k
                                        << " tiling " << static_cast<int>(tiling));
      CheckSiluMulEpilogue(m, inter, k, ldc, a, w, [&](const GemmArgs& args) {
        EXPECT_TRUE(GemvSupports(args));
        return LaunchGemv(args, nullptr, tiling);
      });
    }
  }
}

// The skinny tensor-core GEMM (decode batches up to 64 rows) against the reference: every
// block shape and split count plus the chosen one, every epilogue, odd m and n, k from one
// 32-wide step up, a padded ldc.
TEST_F(GemmTest, SkinnyGemmMatchesReference) {
  for (auto [m, n, k, ldc] : {std::tuple{64, 6144, 4096, 0}, {9, 97, 160, 0}, {17, 1000, 2048, 1003},
                              {33, 333, 32, 0}, {64, 4096, 14336, 0}, {1, 13, 96, 16},
                              {48, 257, 1024, 0}, {16, 4099, 512, 0}}) {
    const OwnGemmCase c(m, n, k, ldc, rng_);
    std::vector<SkinnyGemmConfig> configs = SkinnyGemmAllConfigs();
    configs.push_back({});  // the chosen one
    for (const SkinnyGemmConfig& config : configs) {
      SCOPED_TRACE(::testing::Message() << "m " << m << " n " << n << " k " << k << " ldc " << ldc
                                        << " warps " << config.warps << " m_tiles "
                                        << config.m_tiles << " wgmma_rows " << config.wgmma_rows
                                        << " splits " << config.splits);
      c.Check([&](const GemmArgs& args) {
        EXPECT_TRUE(SkinnyGemmSupports(args));
        return LaunchSkinnyGemm(args, nullptr, config);
      });
    }
  }
  DeviceArray<uint16_t> d_x(RandomBf16(65 * 64, rng_));
  GemmArgs too_many{.a = AsBf16(d_x.get()), .w = AsBf16(d_x.get()), .out = d_x.get(), .m = 65,
                    .n = 64, .k = 64};
  EXPECT_FALSE(SkinnyGemmSupports(too_many));
  EXPECT_EQ(LaunchSkinnyGemm(too_many, nullptr).code(), absl::StatusCode::kInvalidArgument);
  GemmArgs odd_k = too_many;
  odd_k.m = 8;
  odd_k.k = 40;  // not a multiple of 32
  EXPECT_FALSE(SkinnyGemmSupports(odd_k));
  GemmArgs ok = too_many;
  ok.m = 8;
  EXPECT_TRUE(SkinnyGemmSupports(ok));
  EXPECT_EQ(LaunchSkinnyGemm(ok, nullptr, {.warps = 6, .m_tiles = 1, .splits = 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchSkinnyGemm(ok, nullptr, {.warps = 4, .m_tiles = 1, .splits = 9}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchSkinnyGemm(ok, nullptr, {.splits = 1, .wgmma_rows = 96}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LaunchSkinnyGemm(ok, nullptr, {.warps = 4, .splits = 1, .wgmma_rows = 64}).code(),
            absl::StatusCode::kInvalidArgument);
}

// Its fused SiLU·mul epilogue gives the bits of its bf16 output followed by LaunchSiluMul.
TEST_F(GemmTest, SkinnyGemmSiluMulMatchesGemmThenSiluMul) {
  for (auto [m, inter, k, ldc] : {std::tuple{64, 14336, 4096, 0}, {9, 6, 160, 0},
                                  {40, 1001, 2048, 1003}, {16, 64, 32, 0}}) {
    DeviceArray<uint16_t> a(RandomBf16(size_t(m) * k, rng_)), w(RandomBf16(size_t(2 * inter) * k, rng_));
    std::vector<SkinnyGemmConfig> configs = {{}, {4, 1, 3}, {8, 2, 8}, {4, 2, 1}};
    for (const SkinnyGemmConfig& config : SkinnyGemmAllConfigs()) {
      if (config.wgmma_rows != 0 && config.splits <= 3) configs.push_back(config);
    }
    for (const SkinnyGemmConfig& config : configs) {
      SCOPED_TRACE(::testing::Message() << "m " << m << " inter " << inter << " k " << k
                                        << " warps " << config.warps << " wgmma_rows "
                                        << config.wgmma_rows << " splits " << config.splits);
      CheckSiluMulEpilogue(m, inter, k, ldc, a, w, [&](const GemmArgs& args) {
        EXPECT_TRUE(SkinnyGemmSupports(args));
        return LaunchSkinnyGemm(args, nullptr, config);
      });
    }
  }
}

}  // namespace
}  // namespace tandem
