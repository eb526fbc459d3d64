// KV transfer between two GPUs over NCCL, printed as JSON, all measured in the same run for
// 512/2k/8k-token requests of the Llama-3-8B KV shape (32 layers, 8 kv heads, head_dim 128,
// bf16: 128 KiB per token):
//   - raw NCCL send/recv: one message of the request's size (on the transport's
//     non-blocking communicator and on a blocking one), one message per layer (both kinds),
//     and messages of each swept chunk size;
//   - raw NCCL as the graded messages of the default chunk plan on a blocking communicator
//     (the wire's share of tandem's time);
//   - tandem (NcclKvSender on GPU 0 -> NcclKvReceiver on GPU 1: cross-layer chunks, gather,
//     sends, scatter into random block tables) with the default options, then for each
//     --configs entry chunk_mib:edge_mib:slots:b|n (b: blocking data communicator);
//   - gather + default-size chunk sends received into one contiguous buffer (no scatter), to
//     price the scatter.
// fraction_of_raw is tandem's time over the fastest raw variant's; fraction_of_raw_one_message
// over the one-message send on the non-blocking communicator. One process, a thread per rank.
//
//   kv_transfer_bench [--iters=20] [--tokens=512,2048,8192] [--chunk_mib=64,128] (raw)
//                     [--configs=128:0:2:n,128:0:2:b,128:16:2:b,...]
#include <barrier>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/median.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_handles.h"
#include "kv_transfer/nccl/kv_chunk_plan.h"
#include "kv_transfer/nccl/kv_pack_kernels.h"
#include "kv_transfer/nccl/nccl_comm.h"
#include "kv_transfer/nccl/nccl_kv_receiver.h"
#include "kv_transfer/nccl/nccl_kv_sender.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

constexpr int64_t kCacheBlocks = 1100;

KvLayout Layout8B() {
  return KvLayout{.dtype = DType::kBF16, .block_size_tokens = 16, .num_layers = 32,
                  .total_kv_heads = 8, .kv_head_begin = 0, .num_kv_heads = 8, .head_dim = 128};
}

struct DeviceCache {
  DeviceBuffer bytes;
  KvCacheView view;
};

DeviceCache MakeCache(int gpu, uint64_t seed) {
  TANDEM_CUDA_CHECK(cudaSetDevice(gpu));
  KvLayout layout = Layout8B();
  DeviceCache c;
  size_t region = kCacheBlocks * layout.BytesPerBlockPerLayer();
  c.bytes = *DeviceBuffer::Allocate(2 * layout.num_layers * region);
  LaunchFillPattern(c.bytes.as<std::byte>(), c.bytes.size_bytes(), seed, 0, nullptr);
  TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
  c.view = {.layout = layout, .memory = KvMemory::kCudaDevice, .cuda_device = gpu,
            .num_blocks = kCacheBlocks};
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    c.view.k.push_back(c.bytes.as<std::byte>() + 2 * l * region);
    c.view.v.push_back(c.bytes.as<std::byte>() + (2 * l + 1) * region);
  }
  return c;
}

using bench::Median;

// Runs `rank0` on GPU 0 and `rank1` on GPU 1 in two threads with a 2-rank communicator,
// `iters` times after 3 warm-ups, both starting each iteration together; returns the median
// wall seconds of an iteration (until both ranks' streams are done).
template <typename F0, typename F1>
double TimePair(int iters, bool blocking, F0 rank0, F1 rank1) {
  ncclUniqueId id = *NcclComm::NewUniqueId();
  std::barrier sync(2);
  std::vector<double> seconds;
  auto run = [&](int rank, auto& body) {
    TANDEM_CUDA_CHECK(cudaSetDevice(rank));
    NcclComm comm = *NcclComm::Create(2, rank, id, absl::Now() + absl::Seconds(60), blocking);
    CudaStream stream = *CudaStream::Create();
    for (int i = 0; i < iters + 3; ++i) {
      sync.arrive_and_wait();
      absl::Time start = absl::Now();
      body(comm, stream.get());
      stream.Synchronize();
      sync.arrive_and_wait();
      if (rank == 0 && i >= 3) seconds.push_back(absl::ToDoubleSeconds(absl::Now() - start));
    }
    sync.arrive_and_wait();
  };
  std::thread t1([&] { run(1, rank1); });
  run(0, rank0);
  t1.join();
  return Median(seconds);
}

// One message of `bytes` between buffers from ncclMemAlloc, registered with a blocking
// communicator on both sides (NCCL's zero-copy path between GPUs of one host).
double RawRegistered(size_t bytes, int iters) {
  NcclMemory send_buffer, recv_buffer;
  TANDEM_CUDA_CHECK(cudaSetDevice(0));
  send_buffer = *NcclMemory::Allocate(bytes, /*registrable=*/true);
  TANDEM_CUDA_CHECK(cudaSetDevice(1));
  recv_buffer = *NcclMemory::Allocate(bytes, /*registrable=*/true);
  bool registered[2] = {false, false};
  // Registers `buffer` with the rank's communicator on its first iteration.
  auto register_once = [&](int rank, NcclComm& comm, void* buffer) {
    if (registered[rank]) return;
    registered[rank] = true;
    absl::Status r = comm.Register(buffer, bytes);
    if (!r.ok()) std::fprintf(stderr, "register (rank %d): %s\n", rank, r.ToString().c_str());
  };
  double seconds = TimePair(
      iters, /*blocking=*/true,
      [&](NcclComm& c, cudaStream_t s) {
        register_once(0, c, send_buffer.data());
        ncclSend(send_buffer.data(), bytes, ncclUint8, 1, c.get(), s);
      },
      [&](NcclComm& c, cudaStream_t s) {
        register_once(1, c, recv_buffer.data());
        ncclRecv(recv_buffer.data(), bytes, ncclUint8, 0, c.get(), s);
      });
  return seconds;
}

// A call on a non-blocking communicator may answer ncclInProgress.
void CheckNccl(const NcclComm& comm, ncclResult_t r) {
  absl::Status s = comm.Finish(r, "nccl", absl::Now() + absl::Seconds(60));
  if (!s.ok()) {
    std::fprintf(stderr, "nccl error %s\n", s.ToString().c_str());
    std::abort();
  }
}

std::vector<int64_t> ParseList(const std::string& text) {
  std::vector<int64_t> out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int64_t v;
    if (absl::SimpleAtoi(part, &v)) out.push_back(v);
  }
  return out;
}

struct Config {
  size_t chunk_bytes = 0;
  size_t edge_bytes = 0;  // NcclKvSenderOptions::edge_chunk_bytes
  int slots = 0;
  bool blocking = false;  // NcclKv*Options::blocking_communicator
  int32_t max_ctas = 0;   // NcclKv*Options::pack_max_ctas
  int64_t ramp = 1;       // NcclKvSenderOptions::edge_ramp
  bool registered = false;  // NcclKvSenderOptions::register_staging
  bool direct = false;      // NcclKvSenderOptions::direct_write
};

// "chunk_mib:edge_mib:slots:b|n[:pack_ctas[:ramp[:r|u|d]]]" entries, comma separated (r:
// NCCL send/receive between registered staging, u: between unregistered staging, d: direct
// writes; default: the sender's defaults).
std::vector<Config> ParseConfigs(const std::string& text) {
  std::vector<Config> out;
  for (absl::string_view entry : absl::StrSplit(text, ',')) {
    std::vector<std::string> f = absl::StrSplit(entry, ':');
    int64_t chunk = 0, edge = 0, slots = 0, ctas = 0, ramp = 1;
    if (f.size() < 4 || f.size() > 7 || !absl::SimpleAtoi(f[0], &chunk) ||
        !absl::SimpleAtoi(f[1], &edge) || !absl::SimpleAtoi(f[2], &slots) ||
        (f.size() >= 5 && !absl::SimpleAtoi(f[4], &ctas)) ||
        (f.size() >= 6 && !absl::SimpleAtoi(f[5], &ramp)) || (f.size() == 7 && f[6] != "r" && f[6] != "u" && f[6] != "d")) {
      std::fprintf(stderr, "bad --configs entry %s\n", std::string(entry).c_str());
      std::exit(2);
    }
    out.push_back({.chunk_bytes = static_cast<size_t>(chunk) << 20,
                   .edge_bytes = static_cast<size_t>(edge) << 20,
                   .slots = static_cast<int>(slots), .blocking = f[3] == "b",
                   .max_ctas = static_cast<int32_t>(ctas), .ramp = ramp,
                   .registered = f.size() == 7 ? f[6] == "r"
                                               : NcclKvSenderOptions{}.register_staging,
                   .direct = f.size() == 7 ? f[6] == "d" : NcclKvSenderOptions{}.direct_write});
  }
  return out;
}

// Median seconds from StartSend until the receiver reports the arrival, random block
// tables, one (sender, receiver) pair with `config`; fills `ms` per size. False on failure.
bool TimeTandem(const Config& config, const DeviceCache& src, const DeviceCache& dst,
                const std::vector<int64_t>& token_counts, int iters, std::vector<double>* out) {
  const KvLayout& layout = src.view.layout;
  std::mt19937 rng(12345);
  std::vector<int32_t> all(kCacheBlocks);
  for (int64_t i = 0; i < kCacheBlocks; ++i) all[i] = static_cast<int32_t>(i);
  NcclKvReceiverOptions receiver_options{
      .identity = {.name = "decode", .incarnation = 1, .model_fingerprint = "bench"}};
  receiver_options.max_chunk_bytes = config.chunk_bytes;
  receiver_options.num_staging_slots = config.slots;
  receiver_options.pack_max_ctas = config.max_ctas;
  NcclKvSenderOptions sender_options{
      .identity = {.name = "prefill", .incarnation = 1, .model_fingerprint = "bench"}};
  sender_options.max_chunk_bytes = config.chunk_bytes;
  sender_options.num_staging_slots = config.slots;
  sender_options.blocking_communicator = config.blocking;
  sender_options.edge_chunk_bytes = config.edge_bytes;
  sender_options.pack_max_ctas = config.max_ctas;
  sender_options.edge_ramp = config.ramp;
  sender_options.register_staging = config.registered;
  sender_options.direct_write = config.direct;
  auto receiver = *NcclKvReceiver::Start(dst.view, receiver_options);
  auto sender = *NcclKvSender::Create(src.view, sender_options);
  for (int64_t tokens : token_counts) {
    const int64_t blocks = (tokens + layout.block_size_tokens - 1) / layout.block_size_tokens;
    std::vector<double> seconds;
    for (int i = 0; i < iters + 3; ++i) {
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<int32_t> src_blocks(all.begin(), all.begin() + blocks);
      std::shuffle(all.begin(), all.end(), rng);
      std::vector<int32_t> dst_blocks(all.begin(), all.begin() + blocks);
      std::string id = "r" + std::to_string(tokens) + "-" + std::to_string(i);
      receiver->Expect(id, dst_blocks, absl::Now() + absl::Seconds(60));
      absl::Time start = absl::Now();
      uint64_t transfer = sender->StartSend({.endpoint = receiver->endpoint(),
                                             .receiver_incarnation = 1, .reservation_id = id,
                                             .src_blocks = src_blocks,
                                             .num_tokens = static_cast<int32_t>(tokens),
                                             .first_token_id = 1,
                                             .deadline = absl::Now() + absl::Seconds(60)});
      std::vector<KvArrival> arrivals;
      while (arrivals.empty()) arrivals = receiver->WaitForArrivals(absl::Seconds(60));
      double took = absl::ToDoubleSeconds(absl::Now() - start);
      std::optional<absl::Status> status;
      while (!(status = sender->Poll(transfer))) std::this_thread::yield();
      if (!arrivals[0].status.ok() || !status->ok()) {
        std::fprintf(stderr, "transfer failed: %s / %s\n", arrivals[0].status.ToString().c_str(),
                     status->ToString().c_str());
        return false;
      }
      if (i >= 3) seconds.push_back(took);
    }
    out->push_back(Median(seconds));
  }
  return true;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  using namespace tandem;
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  std::signal(SIGPIPE, SIG_IGN);  // a closed control connection is an error, not a silent exit
  int iters = 20;
  std::vector<int64_t> token_counts = {512, 2048, 8192};
  std::vector<int64_t> chunk_mib = {64, 128};
  std::vector<Config> configs = ParseConfigs(
      "128:0:2:n,128:0:2:b,128:8:2:b,128:16:2:b,128:32:2:b,64:8:2:b,64:16:2:b,128:16:3:b,"
      "128:16:2:n");
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--iters=", 0) == 0) (void)absl::SimpleAtoi(a.substr(8), &iters);
    if (a.rfind("--tokens=", 0) == 0) token_counts = ParseList(a.substr(9));
    if (a.rfind("--chunk_mib=", 0) == 0) chunk_mib = ParseList(a.substr(12));
    if (a.rfind("--configs=", 0) == 0) configs = ParseConfigs(a.substr(10));
  }
  int devices = 0;
  TANDEM_CUDA_CHECK(cudaGetDeviceCount(&devices));
  if (devices < 2) {
    std::fprintf(stderr, "kv_transfer_bench needs two GPUs\n");
    return 1;
  }
  const KvLayout layout = Layout8B();
  const size_t block_bytes = layout.BytesPerBlockPerLayer();
  DeviceCache src = MakeCache(0, 100), dst = MakeCache(1, 200);
  const Config defaults{.chunk_bytes = NcclKvSenderOptions{}.max_chunk_bytes,
                        .edge_bytes = NcclKvSenderOptions{}.edge_chunk_bytes,
                        .slots = NcclKvSenderOptions{}.num_staging_slots,
                        .blocking = NcclKvSenderOptions{}.blocking_communicator,
                        .max_ctas = NcclKvSenderOptions{}.pack_max_ctas,
                        .ramp = NcclKvSenderOptions{}.edge_ramp,
                        .registered = NcclKvSenderOptions{}.register_staging,
                        .direct = NcclKvSenderOptions{}.direct_write};
  nlohmann::json out;
  out["shape"] = layout.Describe();
  out["kv_bytes_per_token"] = layout.kv_bytes_per_block() / layout.block_size_tokens;
  out["iters"] = iters;
  out["default_chunk_mib"] = defaults.chunk_bytes >> 20;
  out["default_slots"] = defaults.slots;
  out["default_edge_mib"] = defaults.edge_bytes >> 20;
  out["default_blocking_comm"] = defaults.blocking;
  out["default_ramp"] = defaults.ramp;
  out["default_pack_max_ctas"] = defaults.max_ctas;
  out["default_registered"] = defaults.registered;
  out["default_direct_write"] = defaults.direct;

  // Tandem first (its own communicators), default options, then the sweep.
  std::vector<double> tandem_s;
  if (!TimeTandem(defaults, src, dst, token_counts, iters, &tandem_s)) return 1;
  std::vector<std::pair<Config, std::vector<double>>> sweep;
  for (const Config& config : configs) {
    std::vector<double> seconds;
    if (!TimeTandem(config, src, dst, token_counts, iters, &seconds)) return 1;
    sweep.emplace_back(config, seconds);
    std::fprintf(stderr, "tandem %zu/%zu MiB x %d slots%s done\n", config.chunk_bytes >> 20,
                 config.edge_bytes >> 20, config.slots, config.blocking ? " blocking" : "");
  }

  // Device arrays of layer pointers for the no-scatter variant's gathers.
  TANDEM_CUDA_CHECK(cudaSetDevice(0));
  std::vector<std::byte*> layer_ptrs = src.view.k;
  layer_ptrs.insert(layer_ptrs.end(), src.view.v.begin(), src.view.v.end());
  DeviceBuffer layers = *DeviceBuffer::Allocate(sizeof(std::byte*) * layer_ptrs.size());
  TANDEM_CUDA_CHECK(cudaMemcpy(layers.data(), layer_ptrs.data(), layers.size_bytes(),
                               cudaMemcpyHostToDevice));
  std::mt19937 rng(777);
  std::vector<int32_t> all(kCacheBlocks);
  for (int64_t i = 0; i < kCacheBlocks; ++i) all[i] = static_cast<int32_t>(i);

  for (size_t t = 0; t < token_counts.size(); ++t) {
    const int64_t tokens = token_counts[t];
    const int64_t blocks = (tokens + layout.block_size_tokens - 1) / layout.block_size_tokens;
    const size_t bytes = static_cast<size_t>(blocks) * layout.kv_bytes_per_block();
    const size_t layer_bytes = 2 * blocks * block_bytes;
    nlohmann::json row = {{"tokens", tokens}, {"bytes", bytes}};

    TANDEM_CUDA_CHECK(cudaSetDevice(0));
    DeviceBuffer a = *DeviceBuffer::Allocate(bytes);
    LaunchFillPattern(a.as<std::byte>(), bytes, 7, 0, nullptr);
    TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
    TANDEM_CUDA_CHECK(cudaSetDevice(1));
    DeviceBuffer b = *DeviceBuffer::Allocate(bytes);
    // Raw: `bytes` as the messages of `plan` (units of 2 * block_bytes).
    auto raw_plan = [&](const KvChunkPlan& plan, bool blocking) {
      const size_t unit = 2 * block_bytes;
      return TimePair(
          iters, blocking,
          [&](NcclComm& c, cudaStream_t s) {
            for (int64_t i = 0; i < plan.num_chunks(); ++i) {
              const KvChunk m = plan.chunk(i);
              CheckNccl(c, ncclSend(a.as<std::byte>() + m.first_unit * unit, m.num_units * unit,
                                    ncclUint8, 1, c.get(), s));
            }
          },
          [&](NcclComm& c, cudaStream_t s) {
            for (int64_t i = 0; i < plan.num_chunks(); ++i) {
              const KvChunk m = plan.chunk(i);
              CheckNccl(c, ncclRecv(b.as<std::byte>() + m.first_unit * unit, m.num_units * unit,
                                    ncclUint8, 0, c.get(), s));
            }
          });
    };
    // Raw: `bytes` as messages of `message` bytes (a multiple of a unit; the last shorter).
    auto raw = [&](size_t message, bool blocking) {
      return raw_plan({.num_blocks = blocks, .num_layers = layout.num_layers,
                       .units_per_chunk = static_cast<int64_t>(message / (2 * block_bytes))},
                      blocking);
    };
    const double raw_one = raw(bytes, /*blocking=*/false);
    const double raw_one_blocking = raw(bytes, /*blocking=*/true);
    const double raw_layers = raw(layer_bytes, /*blocking=*/false);
    const double raw_layers_blocking = raw(layer_bytes, /*blocking=*/true);
    const double raw_one_registered = RawRegistered(bytes, iters);
    double raw_best = std::min({raw_one, raw_one_blocking, raw_layers, raw_layers_blocking,
                                raw_one_registered});
    row["raw_one_message_registered_gb_per_s"] = bytes / raw_one_registered / 1e9;
    row["raw_one_message_gb_per_s"] = bytes / raw_one / 1e9;
    row["raw_one_message_blocking_comm_gb_per_s"] = bytes / raw_one_blocking / 1e9;
    row["raw_layer_messages_gb_per_s"] = bytes / raw_layers / 1e9;
    row["raw_layer_messages_blocking_comm_gb_per_s"] = bytes / raw_layers_blocking / 1e9;
    for (int64_t mib : chunk_mib) {
      const double s = raw(static_cast<size_t>(mib) << 20, /*blocking=*/false);
      raw_best = std::min(raw_best, s);
      row["raw_chunk_messages_gb_per_s"][std::to_string(mib) + "MiB"] = bytes / s / 1e9;
    }
    const KvChunkPlan default_plan{
        .num_blocks = blocks, .num_layers = layout.num_layers,
        .units_per_chunk = UnitsPerChunk(defaults.chunk_bytes, 2 * block_bytes, kCacheBlocks,
                                         layout.num_layers),
        .edge_units = EdgeUnits(defaults.edge_bytes, 2 * block_bytes),
        .ramp = defaults.ramp};
    const double raw_graded = raw_plan(default_plan, /*blocking=*/true);
    raw_best = std::min(raw_best, raw_graded);
    row["raw_default_plan_blocking_comm_gb_per_s"] = bytes / raw_graded / 1e9;
    row["default_plan_messages"] = default_plan.num_chunks();
    row["raw_best_gb_per_s"] = bytes / raw_best / 1e9;

    row["tandem_ms"] = tandem_s[t] * 1e3;
    row["tandem_gb_per_s"] = bytes / tandem_s[t] / 1e9;
    row["fraction_of_raw"] = raw_best / tandem_s[t];
    row["fraction_of_raw_one_message"] = raw_one / tandem_s[t];
    for (const auto& [config, seconds] : sweep) {
      row["tandem_sweep"].push_back({{"chunk_mib", config.chunk_bytes >> 20},
                                     {"edge_mib", config.edge_bytes >> 20},
                                     {"slots", config.slots},
                                     {"blocking_comm", config.blocking},
                                     {"pack_max_ctas", config.max_ctas},
                                     {"ramp", config.ramp},
                                     {"registered", config.registered},
                                     {"direct_write", config.direct},
                                     {"ms", seconds[t] * 1e3},
                                     {"gb_per_s", bytes / seconds[t] / 1e9},
                                     {"fraction_of_raw", raw_best / seconds[t]}});
    }

    // No scatter: the default plan's chunks gathered (random source blocks) and sent, received
    // into one contiguous buffer on GPU 1.
    TANDEM_CUDA_CHECK(cudaSetDevice(0));
    const KvChunkPlan& plan = default_plan;
    const size_t slot_bytes = static_cast<size_t>(plan.units_per_chunk) * 2 * block_bytes;
    DeviceBuffer staging = *DeviceBuffer::Allocate(2 * slot_bytes);
    DeviceBuffer ids = *DeviceBuffer::Allocate(sizeof(int32_t) * blocks);
    std::shuffle(all.begin(), all.end(), rng);
    TANDEM_CUDA_CHECK(cudaMemcpy(ids.data(), all.data(), sizeof(int32_t) * blocks, cudaMemcpyHostToDevice));
    double no_scatter = TimePair(
        iters, defaults.blocking,
        [&](NcclComm& c, cudaStream_t s) {
          std::byte* const* k = layers.as<std::byte* const>();
          for (int64_t i = 0; i < plan.num_chunks(); ++i) {
            const KvChunk chunk = plan.chunk(i);
            std::byte* slot = staging.as<std::byte>() + (i % 2) * slot_bytes;
            LaunchKvGather({.k_layers = k, .v_layers = k + layout.num_layers,
                            .block_ids = ids.as<int32_t>(), .num_blocks = static_cast<int32_t>(blocks),
                            .first_unit = chunk.first_unit, .count = chunk.num_units,
                            .block_bytes = block_bytes, .staging = slot}, s);
            CheckNccl(c, ncclSend(slot, 2 * chunk.num_units * block_bytes, ncclUint8, 1, c.get(), s));
          }
        },
        [&](NcclComm& c, cudaStream_t s) {
          for (int64_t i = 0; i < plan.num_chunks(); ++i) {
            const KvChunk chunk = plan.chunk(i);
            CheckNccl(c, ncclRecv(b.as<std::byte>() + chunk.first_unit * 2 * block_bytes,
                                  2 * chunk.num_units * block_bytes, ncclUint8, 0, c.get(), s));
          }
        });
    row["no_scatter_gb_per_s"] = bytes / no_scatter / 1e9;
    row["no_scatter_fraction_of_raw"] = raw_best / no_scatter;
    out["sizes"].push_back(row);
    std::fprintf(stderr, "%lld tokens done\n", static_cast<long long>(tokens));
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
