#include "common/kv_cache/block_hash.h"

#include <vector>

namespace tandem {
namespace {

constexpr uint64_t kC1 = 0x87c37b91114253d5ULL;
constexpr uint64_t kC2 = 0x4cf5ad432745937fULL;

uint64_t Rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t Fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

// Little-endian load of `n` (<= 8) bytes, independent of the host's byte order.
uint64_t LoadLe(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

uint64_t MixK1(uint64_t k1) { return Rotl64(k1 * kC1, 31) * kC2; }
uint64_t MixK2(uint64_t k2) { return Rotl64(k2 * kC2, 33) * kC1; }

void AppendLe32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void AppendLe64(std::vector<uint8_t>& out, uint64_t v) {
  AppendLe32(out, static_cast<uint32_t>(v));
  AppendLe32(out, static_cast<uint32_t>(v >> 32));
}

}  // namespace

BlockHash Murmur3X64_128(std::span<const uint8_t> bytes, uint32_t seed) {
  const size_t len = bytes.size();
  const size_t num_blocks = len / 16;
  uint64_t h1 = seed;
  uint64_t h2 = seed;
  for (size_t i = 0; i < num_blocks; ++i) {
    const uint8_t* block = bytes.data() + 16 * i;
    h1 ^= MixK1(LoadLe(block, 8));
    h1 = (Rotl64(h1, 27) + h2) * 5 + 0x52dce729;
    h2 ^= MixK2(LoadLe(block + 8, 8));
    h2 = (Rotl64(h2, 31) + h1) * 5 + 0x38495ab5;
  }
  const uint8_t* tail = bytes.data() + 16 * num_blocks;
  const size_t tail_len = len & 15;
  if (tail_len > 8) h2 ^= MixK2(LoadLe(tail + 8, tail_len - 8));
  if (tail_len > 0) h1 ^= MixK1(LoadLe(tail, tail_len < 8 ? tail_len : 8));
  h1 ^= len;
  h2 ^= len;
  h1 += h2;
  h2 += h1;
  h1 = Fmix64(h1);
  h2 = Fmix64(h2);
  h1 += h2;
  h2 += h1;
  return BlockHash{.lo = h1, .hi = h2};
}

BlockHash HashBlockTokens(const BlockHash& parent, std::span<const int32_t> tokens) {
  std::vector<uint8_t> bytes;
  bytes.reserve(16 + 4 * tokens.size());
  AppendLe64(bytes, parent.lo);
  AppendLe64(bytes, parent.hi);
  for (int32_t t : tokens) AppendLe32(bytes, static_cast<uint32_t>(t));
  return Murmur3X64_128(bytes, /*seed=*/0);
}

}  // namespace tandem
