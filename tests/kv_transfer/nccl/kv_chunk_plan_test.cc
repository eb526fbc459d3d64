// KvChunkPlan: chunks cover every (layer, block) unit once, in order, within the bound; the
// layers-ready watermark releases only chunks whose units are all written.
#include "kv_transfer/nccl/kv_chunk_plan.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

TEST(KvChunkPlanTest, ChunksTileTheUnitsInOrderAcrossLayers) {
  for (int64_t blocks : {1, 3, 7, 128}) {
    for (int64_t per_chunk : {1, 2, 5, 24, 1000, 100000}) {
      const KvChunkPlan plan{.num_blocks = blocks, .num_layers = 32, .units_per_chunk = per_chunk};
      int64_t next = 0;
      for (int64_t c = 0; c < plan.num_chunks(); ++c) {
        const KvChunk chunk = plan.chunk(c);
        EXPECT_EQ(chunk.first_unit, next);
        EXPECT_GE(chunk.num_units, 1);
        EXPECT_LE(chunk.num_units, per_chunk);
        next += chunk.num_units;
      }
      EXPECT_EQ(next, blocks * 32) << blocks << " blocks, " << per_chunk << " per chunk";
    }
  }
}

TEST(KvChunkPlanTest, GradedChunksTileTheUnitsWithShortEdges) {
  for (int64_t blocks : {1, 3, 7, 128}) {
    for (int64_t per_chunk : {2, 5, 24, 2048}) {
      for (int64_t edge : {1, 3, 256}) {
        const KvChunkPlan plan{.num_blocks = blocks, .num_layers = 32,
                               .units_per_chunk = per_chunk, .edge_units = edge};
        int64_t next = 0, smallest = per_chunk, largest = 0;
        for (int64_t c = 0; c < plan.num_chunks(); ++c) {
          const KvChunk chunk = plan.chunk(c);
          EXPECT_EQ(chunk.first_unit, next);
          EXPECT_GE(chunk.num_units, 1);
          EXPECT_LE(chunk.num_units, per_chunk);
          if (plan.graded() && (c == 0 || c == plan.num_chunks() - 1)) {
            EXPECT_EQ(chunk.num_units, edge);
          } else if (plan.graded()) {
            smallest = std::min<int64_t>(smallest, chunk.num_units);
            largest = std::max<int64_t>(largest, chunk.num_units);
          }
          next += chunk.num_units;
        }
        EXPECT_EQ(next, blocks * 32) << blocks << " blocks, " << per_chunk << "/" << edge;
        if (plan.graded()) {
          EXPECT_LE(largest - smallest, 1);  // balanced middle
        }
      }
    }
  }
}

TEST(KvChunkPlanTest, RampedEdgesTileTheUnitsGrowingThenMirrored) {
  for (int64_t blocks : {1, 3, 7, 128, 512}) {
    for (int64_t per_chunk : {2, 5, 24, 2048}) {
      for (int64_t edge : {1, 3, 64}) {
        for (int64_t ramp : {2, 4}) {
          const KvChunkPlan plan{.num_blocks = blocks, .num_layers = 32,
                                 .units_per_chunk = per_chunk, .edge_units = edge,
                                 .ramp = ramp};
          int64_t next = 0;
          std::vector<int64_t> sizes;
          for (int64_t c = 0; c < plan.num_chunks(); ++c) {
            const KvChunk chunk = plan.chunk(c);
            EXPECT_EQ(chunk.first_unit, next);
            EXPECT_GE(chunk.num_units, 1);
            EXPECT_LE(chunk.num_units, per_chunk);
            sizes.push_back(chunk.num_units);
            next += chunk.num_units;
          }
          EXPECT_EQ(next, blocks * 32) << blocks << "/" << per_chunk << "/" << edge << "/" << ramp;
          if (plan.graded()) {
            // Mirrored ramps: the head grows by `ramp` from `edge` while below the chunk
            // size, and the tail is the head reversed.
            EXPECT_EQ(sizes.front(), edge);
            EXPECT_EQ(sizes.back(), edge);
            for (size_t i = 1; i < sizes.size() && sizes[i] == sizes[i - 1] * ramp &&
                               sizes[i] < per_chunk;
                 ++i) {
              EXPECT_EQ(sizes[sizes.size() - 1 - i], sizes[i]);
            }
          }
        }
      }
    }
  }
  // Llama-3-8B at 2k tokens (4096 units of 64 KiB), 8 MiB first edge, ramp 4, 128 MiB
  // chunks: head 8 + 32 MiB (the next, 128, is not below the chunk size), the tail mirrored,
  // the middle 2816 units in two chunks of 88 MiB.
  const KvChunkPlan plan{.num_blocks = 128, .num_layers = 32, .units_per_chunk = 2048,
                         .edge_units = 128, .ramp = 4};
  ASSERT_EQ(plan.num_chunks(), 6);
  const int64_t want[] = {128, 512, 1408, 1408, 512, 128};
  for (int c = 0; c < 6; ++c) EXPECT_EQ(plan.chunk(c).num_units, want[c]) << c;
}

TEST(KvChunkPlanTest, TwoThousandTokensAtSixteenMibEdges) {
  // Llama-3-8B, 2k tokens: 128 blocks x 32 layers of 64 KiB units = 256 MiB.
  const KvChunkPlan plan{.num_blocks = 128, .num_layers = 32, .units_per_chunk = 2048,
                         .edge_units = 256};
  ASSERT_TRUE(plan.graded());
  ASSERT_EQ(plan.num_chunks(), 4);  // 16 + 112 + 112 + 16 MiB
  EXPECT_EQ(plan.chunk(0).num_units, 256);
  EXPECT_EQ(plan.chunk(1).num_units, 1792);
  EXPECT_EQ(plan.chunk(2).num_units, 1792);
  EXPECT_EQ(plan.chunk(3).first_unit, 4096 - 256);
  EXPECT_EQ(plan.chunk(3).num_units, 256);
  EXPECT_EQ(plan.ReadyChunks(1), 0);   // units [0,128)
  EXPECT_EQ(plan.ReadyChunks(2), 1);   // units [0,256): the first chunk
  EXPECT_EQ(plan.ReadyChunks(15), 1);
  EXPECT_EQ(plan.ReadyChunks(16), 2);  // chunk 1 is units [256, 2048): layers 2..15
  EXPECT_EQ(plan.ReadyChunks(31), 3);  // chunk 2 ends at unit 3840 (30 layers)
  EXPECT_EQ(plan.ReadyChunks(32), 4);
}

TEST(KvChunkPlanTest, GradedReadyChunksNeverIncludeAnUnwrittenLayer) {
  for (int64_t edge : {1, 2, 4}) {
    const KvChunkPlan plan{.num_blocks = 3, .num_layers = 5, .units_per_chunk = 5,
                           .edge_units = edge};
    int64_t previous = 0;
    for (int64_t layers = 0; layers <= 5; ++layers) {
      const int64_t ready = plan.ReadyChunks(layers);
      EXPECT_GE(ready, previous);
      previous = ready;
      if (ready > 0) {
        const KvChunk last = plan.chunk(ready - 1);
        EXPECT_LE(last.first_unit + last.num_units, layers * plan.num_blocks);
      }
      if (ready < plan.num_chunks()) {  // the next chunk really is not ready
        const KvChunk next = plan.chunk(ready);
        EXPECT_GT(next.first_unit + next.num_units, layers * plan.num_blocks);
      }
    }
    EXPECT_EQ(plan.ReadyChunks(5), plan.num_chunks());
  }
}

TEST(KvChunkPlanTest, EdgesAtOrAboveTheChunkSizeMeanUniformChunks) {
  const KvChunkPlan plan{.num_blocks = 3, .num_layers = 4, .units_per_chunk = 5, .edge_units = 5};
  EXPECT_FALSE(plan.graded());
  EXPECT_EQ(plan.num_chunks(), 3);
  EXPECT_EQ(EdgeUnits(0, 64 << 10), 0);
  EXPECT_EQ(EdgeUnits(1000, 64 << 10), 1);
  EXPECT_EQ(EdgeUnits(16u << 20, 64 << 10), 256);
}

TEST(KvChunkPlanTest, EmptyRequestHasNoChunks) {
  const KvChunkPlan plan{.num_blocks = 0, .num_layers = 32, .units_per_chunk = 8};
  EXPECT_EQ(plan.num_chunks(), 0);
  EXPECT_EQ(plan.ReadyChunks(32), 0);
}

TEST(KvChunkPlanTest, ReadyChunksNeverIncludeAnUnwrittenLayer) {
  const KvChunkPlan plan{.num_blocks = 3, .num_layers = 4, .units_per_chunk = 5};  // 12 units
  EXPECT_EQ(plan.num_chunks(), 3);  // [0,5) [5,10) [10,12)
  EXPECT_EQ(plan.ReadyChunks(0), 0);
  EXPECT_EQ(plan.ReadyChunks(1), 0);  // units [0,3): chunk 0 needs unit 4 (layer 1)
  EXPECT_EQ(plan.ReadyChunks(2), 1);  // units [0,6)
  EXPECT_EQ(plan.ReadyChunks(3), 1);  // units [0,9): chunk 1 ends at 10
  EXPECT_EQ(plan.ReadyChunks(4), 3);  // everything, the short tail included
  EXPECT_EQ(plan.ReadyChunks(99), 3);
  for (int64_t layers = 0; layers <= 4; ++layers) {
    const int64_t ready = plan.ReadyChunks(layers);
    if (ready > 0) {
      const KvChunk last = plan.chunk(ready - 1);
      EXPECT_LE(last.first_unit + last.num_units, layers * plan.num_blocks);
    }
  }
}

TEST(KvChunkPlanTest, UnitsPerChunkIsBoundedByTheSlotAndTheLargestRequest) {
  const size_t unit = 64 << 10;  // Llama-3-8B: K+V of one 16-token block of one layer
  EXPECT_EQ(UnitsPerChunk(128u << 20, unit, 1100, 32), 2048);
  EXPECT_EQ(UnitsPerChunk(1000, unit, 1100, 32), 1);        // below one unit: one unit
  EXPECT_EQ(UnitsPerChunk(128u << 20, unit, 10, 4), 40);    // the whole cache fits
}

}  // namespace
}  // namespace tandem
