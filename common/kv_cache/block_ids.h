// Identifier types shared by the block pool, the block manager and their plans.
#pragma once

#include <cstdint>

namespace tandem {

// Index of a KV block in a worker's pool, [0, num_blocks_total). int32_t because block tables
// and slot mappings handed to the model runner are int32_t.
using BlockId = int32_t;
inline constexpr BlockId kNoBlock = -1;

// A sequence (request, beam, n>1 sample, or decode-side reservation) as the block manager
// knows it. Chosen by the engine; the block manager only uses it as a key.
using SeqId = int64_t;

}  // namespace tandem
