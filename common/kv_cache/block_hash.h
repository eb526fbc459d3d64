// Prefix-cache keys: a chained 128-bit hash of a full block's token ids.
//
// key(block i) = hash(key(block i-1), tokens of block i); block 0 chains from kRootBlockHash.
// So equal keys at block i mean (with overwhelming probability) the same tokens in blocks
// 0..i, and the key is stable across processes and machines (the router can compute it to
// estimate prefix affinity). The hash is MurmurHash3 x64_128 over the parent key's 16 bytes
// followed by the tokens as little-endian uint32, so it is deterministic and well mixed.
//
// A key is never trusted alone: BlockPool keeps each cached block's tokens and parent key and
// a lookup hits only when both are equal to the query's (see docs/kv_cache.md).
// Pure functions; any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

namespace tandem {

struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;

  bool operator==(const BlockHash&) const = default;

  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& b) {
    return H::combine(std::move(h), b.lo, b.hi);
  }
};

// The parent key of a sequence's first block. A per-tenant cache salt would replace it.
inline constexpr BlockHash kRootBlockHash{0x74616e64656d2d6bULL, 0x762d63616368652dULL};

// Computes a block's key from its parent's key and its token ids [block_size_tokens].
// BlockManagerOptions takes one so tests can force collisions.
using BlockHashFn = BlockHash (*)(const BlockHash& parent, std::span<const int32_t> tokens);

// The production BlockHashFn.
BlockHash HashBlockTokens(const BlockHash& parent, std::span<const int32_t> tokens);

// MurmurHash3_x64_128 of `bytes` with `seed` (Austin Appleby's public-domain reference).
// Exposed for its known-answer test.
BlockHash Murmur3X64_128(std::span<const uint8_t> bytes, uint32_t seed);

}  // namespace tandem
