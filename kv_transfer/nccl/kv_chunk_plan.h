// How a transfer's KV bytes are cut into NCCL messages.
//
// A request of `num_blocks` blocks has num_layers * num_blocks units, one unit being one
// block of one layer (its K block and its V block). Units are numbered layer-major: unit u
// is (layer u / num_blocks, the request's block u % num_blocks). A chunk is a run of at most
// `units_per_chunk` consecutive units — it may span layers — gathered by one kernel launch
// into one staging slot and sent as one NCCL message. Both sides derive the same chunks
// from (num_blocks, num_layers, units_per_chunk), which the transfer header carries.
//
// The boundaries do not depend on when layers become ready, so a sender overlapping the
// prefill forward can send chunks [0, ReadyChunks(layers_written)) as the forward advances
// without telling the receiver anything new.
#pragma once

#include <algorithm>
#include <cstdint>

namespace tandem {

struct KvChunk {
  int64_t first_unit = 0;
  int32_t num_units = 0;
};

struct KvChunkPlan {
  int64_t num_blocks = 0;       // the request's blocks
  int64_t num_layers = 0;
  int64_t units_per_chunk = 1;  // >= 1

  int64_t num_units() const { return num_blocks * num_layers; }
  int64_t num_chunks() const { return (num_units() + units_per_chunk - 1) / units_per_chunk; }
  KvChunk chunk(int64_t index) const {
    const int64_t first = index * units_per_chunk;
    return {first, static_cast<int32_t>(std::min(units_per_chunk, num_units() - first))};
  }
  // How many leading chunks lie entirely in layers [0, layers_ready).
  int64_t ReadyChunks(int64_t layers_ready) const {
    const int64_t ready_units = std::clamp<int64_t>(layers_ready, 0, num_layers) * num_blocks;
    if (ready_units == num_units()) return num_chunks();
    return ready_units / units_per_chunk;
  }
};

// Units per chunk for a staging slot of `max_chunk_bytes`: at least one, at most the
// largest request's units (`max_blocks` blocks in every layer).
inline int64_t UnitsPerChunk(size_t max_chunk_bytes, size_t unit_bytes, int64_t max_blocks,
                             int64_t num_layers) {
  return std::clamp<int64_t>(static_cast<int64_t>(max_chunk_bytes / unit_bytes), 1,
                             std::max<int64_t>(1, max_blocks * num_layers));
}

}  // namespace tandem
