// What the router knows about one worker when it routes a request: plain data, copied out
// of the registry so policies run without locks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace tandem::router {

enum class WorkerRole { kPrefill, kDecode, kColocated };

struct WorkerView {
  std::string name;
  std::string grpc_address;
  uint64_t incarnation = 0;
  WorkerRole role = WorkerRole::kDecode;
  int32_t num_blocks_free = 0;
  int32_t num_blocks_total = 0;
  int32_t num_running = 0;
  int32_t num_waiting = 0;
  int32_t num_inflight = 0;  // requests this router sent and has not seen finish
  absl::flat_hash_set<uint64_t> cached_block_hashes;  // low 64 bits of chained block hashes

  // 0 = idle, grows with queued work and KV pressure.
  double Load() const {
    double kv_used = num_blocks_total > 0
                         ? 1.0 - static_cast<double>(num_blocks_free) / num_blocks_total
                         : 0.0;
    return num_running + 2.0 * num_waiting + num_inflight + 4.0 * kv_used;
  }
};

// What a policy may look at in a request.
struct RoutingRequest {
  int32_t num_prompt_tokens = 0;
  std::vector<uint64_t> prompt_block_hashes;  // chained hashes of the prompt's full blocks
};

}  // namespace tandem::router
