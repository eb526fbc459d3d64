#include "common/kv_cache/block_hash.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace tandem {
namespace {

// A direct port of Appleby's MurmurHash3_x64_128 (switch fall-through tail), to check the
// production version's restructured tail handling on every tail length.
BlockHash ReferenceMurmur(const std::vector<uint8_t>& data, uint32_t seed) {
  auto rotl = [](uint64_t x, int r) { return (x << r) | (x >> (64 - r)); };
  auto fmix = [](uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
  };
  const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
  const size_t len = data.size(), nblocks = len / 16;
  uint64_t h1 = seed, h2 = seed;
  for (size_t i = 0; i < nblocks; ++i) {
    uint64_t k1, k2;
    std::memcpy(&k1, data.data() + 16 * i, 8);  // the test host is little-endian
    std::memcpy(&k2, data.data() + 16 * i + 8, 8);
    k1 *= c1;
    k1 = rotl(k1, 31);
    k1 *= c2;
    h1 ^= k1;
    h1 = rotl(h1, 27);
    h1 += h2;
    h1 = h1 * 5 + 0x52dce729;
    k2 *= c2;
    k2 = rotl(k2, 33);
    k2 *= c1;
    h2 ^= k2;
    h2 = rotl(h2, 31);
    h2 += h1;
    h2 = h2 * 5 + 0x38495ab5;
  }
  const uint8_t* tail = data.data() + nblocks * 16;
  uint64_t k1 = 0, k2 = 0;
  switch (len & 15) {
    case 15:
      k2 ^= uint64_t{tail[14]} << 48;
      [[fallthrough]];
    case 14:
      k2 ^= uint64_t{tail[13]} << 40;
      [[fallthrough]];
    case 13:
      k2 ^= uint64_t{tail[12]} << 32;
      [[fallthrough]];
    case 12:
      k2 ^= uint64_t{tail[11]} << 24;
      [[fallthrough]];
    case 11:
      k2 ^= uint64_t{tail[10]} << 16;
      [[fallthrough]];
    case 10:
      k2 ^= uint64_t{tail[9]} << 8;
      [[fallthrough]];
    case 9:
      k2 ^= uint64_t{tail[8]};
      k2 *= c2;
      k2 = rotl(k2, 33);
      k2 *= c1;
      h2 ^= k2;
      [[fallthrough]];
    case 8:
      k1 ^= uint64_t{tail[7]} << 56;
      [[fallthrough]];
    case 7:
      k1 ^= uint64_t{tail[6]} << 48;
      [[fallthrough]];
    case 6:
      k1 ^= uint64_t{tail[5]} << 40;
      [[fallthrough]];
    case 5:
      k1 ^= uint64_t{tail[4]} << 32;
      [[fallthrough]];
    case 4:
      k1 ^= uint64_t{tail[3]} << 24;
      [[fallthrough]];
    case 3:
      k1 ^= uint64_t{tail[2]} << 16;
      [[fallthrough]];
    case 2:
      k1 ^= uint64_t{tail[1]} << 8;
      [[fallthrough]];
    case 1:
      k1 ^= uint64_t{tail[0]};
      k1 *= c1;
      k1 = rotl(k1, 31);
      k1 *= c2;
      h1 ^= k1;
  }
  h1 ^= len;
  h2 ^= len;
  h1 += h2;
  h2 += h1;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h1 += h2;
  h2 += h1;
  return BlockHash{h1, h2};
}

TEST(Murmur3Test, KnownAnswers) {
  EXPECT_EQ(Murmur3X64_128({}, 0), (BlockHash{0, 0}));
  // mmh3.hash64(b"foo") == (-2129773440516405919, 9128664383759220103)
  const uint8_t foo[] = {'f', 'o', 'o'};
  EXPECT_EQ(Murmur3X64_128(foo, 0), (BlockHash{0xe271865701f54561ULL, 0x7eaf87e42bba7d87ULL}));
}

TEST(Murmur3Test, MatchesReferencePortOnEveryTailLength) {
  std::mt19937 rng(7);
  for (size_t len = 0; len < 80; ++len) {
    std::vector<uint8_t> data(len);
    for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
    for (uint32_t seed : {0u, 42u}) {
      EXPECT_EQ(Murmur3X64_128(data, seed), ReferenceMurmur(data, seed)) << "len " << len;
    }
  }
}

TEST(HashBlockTokensTest, DependsOnParentTokensAndOrder) {
  const std::vector<int32_t> a = {1, 2, 3, 4};
  const std::vector<int32_t> swapped = {2, 1, 3, 4};
  const BlockHash h = HashBlockTokens(kRootBlockHash, a);
  EXPECT_EQ(h, HashBlockTokens(kRootBlockHash, a));  // deterministic
  EXPECT_NE(h, HashBlockTokens(kRootBlockHash, swapped));
  EXPECT_NE(h, HashBlockTokens(BlockHash{1, 0}, a));
  EXPECT_NE(h, HashBlockTokens(kRootBlockHash, std::span(a).first(3)));
}

// Keys travel between processes (router prefix affinity): pin today's value.
TEST(HashBlockTokensTest, StableAcrossBuilds) {
  const std::vector<int32_t> tokens = {128000, 791, 4062, 14198, 0, -1, 7, 2147483647};
  const BlockHash h = HashBlockTokens(kRootBlockHash, tokens);
  EXPECT_EQ(h, (BlockHash{0x0b87c01082e87d43ULL, 0xfd2e10700d7e178dULL}));
}

// Flipping one bit of one token flips about half of the 128 key bits.
TEST(HashBlockTokensTest, SingleBitFlipsAvalanche) {
  std::mt19937 rng(11);
  std::vector<int32_t> tokens(16);
  double total_flipped = 0;
  const int kTrials = 2000;
  for (int trial = 0; trial < kTrials; ++trial) {
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 128000);
    const BlockHash before = HashBlockTokens(kRootBlockHash, tokens);
    tokens[rng() % 16] ^= int32_t{1} << (rng() % 31);
    const BlockHash after = HashBlockTokens(kRootBlockHash, tokens);
    const int flipped = std::popcount(before.lo ^ after.lo) + std::popcount(before.hi ^ after.hi);
    ASSERT_GE(flipped, 24);  // 128 fair coins: P(< 24) is about 1e-14
    total_flipped += flipped;
  }
  EXPECT_NEAR(total_flipped / kTrials, 64.0, 1.0);
}

}  // namespace
}  // namespace tandem
