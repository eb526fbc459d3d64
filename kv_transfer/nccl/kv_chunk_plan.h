// How a transfer's KV bytes are cut into NCCL messages.
//
// A request of `num_blocks` blocks has num_layers * num_blocks units, one unit being one
// block of one layer (its K block and its V block). Units are numbered layer-major: unit u
// is (layer u / num_blocks, the request's block u % num_blocks). A chunk is a run of
// consecutive units — it may span layers — gathered by one kernel launch into one staging
// slot and sent as one NCCL message. Both sides derive the same chunks from (num_blocks,
// num_layers, units_per_chunk, edge_units), which the transfer header carries.
//
// Uniform (edge_units 0, or not below units_per_chunk): chunks of units_per_chunk, the last
// one shorter. Graded (0 < edge_units < units_per_chunk, more than 2 * edge_units units): a
// first and a last chunk of edge_units each, and between them the fewest chunks of at most
// units_per_chunk, balanced (sizes differ by at most one unit). The short first chunk starts
// the wire almost at once (the pipeline's fill is one small gather) and the short last one
// keeps the final scatter, which nothing overlaps, small (the drain).
//
// Ramped (graded with ramp >= 2): the edges grow geometrically — edge_units, edge_units *
// ramp, ... (each below units_per_chunk, while both ramps still fit in the request) — at the
// head and mirrored at the tail, so each chunk's gather (sender) or scatter (receiver), a
// copy several times faster than the wire, hides behind its neighbour's transfer instead of
// running beside a long one, which slows NCCL (measured: a 112 MiB scatter beside the last
// 16 MiB receive stretched it from ~55 to ~100 us).
//
// The boundaries do not depend on when layers become ready, so a sender overlapping the
// prefill forward can send chunks [0, ReadyChunks(layers_written)) as the forward advances
// without telling the receiver anything new.
#pragma once

#include <algorithm>
#include <cstddef>
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
  int64_t edge_units = 0;       // first and last chunk when graded; 0: uniform
  int64_t ramp = 1;             // graded: edge chunks grow by this factor (1: one edge)

  int64_t num_units() const { return num_blocks * num_layers; }
  bool graded() const {
    return edge_units > 0 && edge_units < units_per_chunk && num_units() > 2 * edge_units;
  }
  int64_t num_chunks() const {
    if (graded()) return 2 * num_edges() + num_middle();
    return (num_units() + units_per_chunk - 1) / units_per_chunk;
  }
  KvChunk chunk(int64_t index) const {
    if (!graded()) {
      const int64_t first = index * units_per_chunk;
      return {first, static_cast<int32_t>(std::min(units_per_chunk, num_units() - first))};
    }
    const int64_t edges = num_edges(), head = EdgeSum(edges), n = num_middle();
    if (index < edges) return {EdgeSum(index), static_cast<int32_t>(EdgeSize(index))};
    if (index >= edges + n) {  // the tail mirrors the head
      const int64_t k = num_chunks() - 1 - index;
      return {num_units() - EdgeSum(k + 1), static_cast<int32_t>(EdgeSize(k))};
    }
    const int64_t j = index - edges, middle = num_units() - 2 * head;
    const int64_t base = middle / n, extra = middle % n;
    return {head + j * base + std::min(j, extra), static_cast<int32_t>(base + (j < extra ? 1 : 0))};
  }
  // How many leading chunks lie entirely in layers [0, layers_ready).
  int64_t ReadyChunks(int64_t layers_ready) const {
    const int64_t ready_units = std::clamp<int64_t>(layers_ready, 0, num_layers) * num_blocks;
    if (ready_units == num_units()) return num_chunks();
    if (!graded()) return ready_units / units_per_chunk;
    int64_t ready = 0;
    while (ready < num_chunks()) {
      const KvChunk c = chunk(ready);
      if (c.first_unit + c.num_units > ready_units) break;
      ++ready;
    }
    return ready;
  }

 private:
  // Edge chunk k (from the outside in) of a graded plan.
  int64_t EdgeSize(int64_t k) const {
    int64_t size = edge_units;
    for (int64_t i = 0; i < k; ++i) size *= ramp;
    return size;
  }
  int64_t EdgeSum(int64_t k) const {  // units in edge chunks [0, k)
    int64_t sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += EdgeSize(i);
    return sum;
  }
  // Edge chunks per side: the first always (graded), more while ramping, each below
  // units_per_chunk, and both sides' edges within the request.
  int64_t num_edges() const {
    int64_t edges = 1;
    if (ramp < 2) return edges;
    while (EdgeSize(edges) < units_per_chunk &&
           2 * EdgeSum(edges + 1) <= num_units()) {
      ++edges;
    }
    return edges;
  }
  int64_t num_middle() const {
    const int64_t middle = num_units() - 2 * EdgeSum(num_edges());
    return (middle + units_per_chunk - 1) / units_per_chunk;
  }
};

// Units per chunk for a staging slot of `max_chunk_bytes`: at least one, at most the
// largest request's units (`max_blocks` blocks in every layer).
inline int64_t UnitsPerChunk(size_t max_chunk_bytes, size_t unit_bytes, int64_t max_blocks,
                             int64_t num_layers) {
  return std::clamp<int64_t>(static_cast<int64_t>(max_chunk_bytes / unit_bytes), 1,
                             std::max<int64_t>(1, max_blocks * num_layers));
}

// Units of a graded plan's first and last chunk for `edge_chunk_bytes` (0: uniform chunks);
// at least one unit when asked for any.
inline int64_t EdgeUnits(size_t edge_chunk_bytes, size_t unit_bytes) {
  if (edge_chunk_bytes == 0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>(edge_chunk_bytes / unit_bytes));
}

}  // namespace tandem
