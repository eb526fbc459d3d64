// What a worker process is configured with: the flags both tandem-prefill and tandem-decode
// take (DESIGN.md §8: configuration by flags), validated with errors that name the flag.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace tandem {

struct WorkerOptions {
  std::string model_dir;                // Hugging Face model directory
  std::string listen = "127.0.0.1:0";   // gRPC host:port; port 0 picks a free one
  std::string kv_listen = "127.0.0.1:0";  // decode only: the KV receiver's host:port
  std::string name;                     // unique in the cluster; empty: role@address
  std::string ready_file;               // written once SERVING; empty: none
  std::string backend = "cpu";          // model runner: "cpu" or "cuda"
  int device = 0;                       // cuda: device ordinal
  std::string kv_transport = "auto";    // KV transfer: "auto", "tcp" or "nccl" (GPU to GPU)
  double gpu_memory_fraction = 0.9;     // cuda: device memory share when num_kv_blocks == 0
  int64_t num_kv_blocks = 2048;         // cuda: 0 sizes the pool from gpu_memory_fraction
  int64_t block_size = 16;              // tokens per KV block
  int threads = 1;                      // CPU compute threads
  int32_t max_num_seqs = 64;            // sequences per engine step
  int64_t max_num_batched_tokens = 512;  // tokens per engine step
  // prefill only: stream a prompt's KV while the forward pass of its last chunk writes it
  // (false: send it after the first token; docs/kv_transfer.md, "Overlap")
  bool kv_overlap = true;
  // Pipelined decode steps: "auto" (the runner decides), "on" or "off" (docs/engine.md)
  std::string pipeline_steps = "auto";
  std::string router;                   // host:port of a router to Register with; optional
};

struct HostPort {
  std::string host;
  int port = 0;
};

// "host:port" with port in [0, 65535]; `flag` names the flag in errors.
absl::StatusOr<HostPort> ParseHostPort(const std::string& value, const std::string& flag);

// Checks every field, naming the flag and its allowed range in the error.
absl::Status ValidateWorkerOptions(const WorkerOptions& options);

}  // namespace tandem
