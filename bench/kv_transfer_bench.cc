// KV transfer between two GPUs over NCCL, printed as JSON: raw NCCL send/recv bandwidth
// (one message of the request's size, and one message per layer) and tandem's transfer
// (NcclKvSender on GPU 0 -> NcclKvReceiver on GPU 1: gather, per-layer sends, scatter into
// random block tables) for 512/2k/8k-token requests of the Llama-3-8B KV shape (32 layers,
// 8 kv heads, head_dim 128, bf16: 128 KiB per token), measured in the same run. Also the
// variant without a scatter (receiving each layer straight into contiguous blocks), to
// price the scatter. One process, one thread per rank.
//
//   kv_transfer_bench [--iters=20] [--tokens=512,2048,8192]
#include <barrier>
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
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_handles.h"
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

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs `rank0` on GPU 0 and `rank1` on GPU 1 in two threads with a 2-rank communicator,
// `iters` times after 3 warm-ups, both starting each iteration together; returns the median
// wall seconds of an iteration (until both ranks' streams are done).
template <typename F0, typename F1>
double TimePair(int iters, F0 rank0, F1 rank1) {
  ncclUniqueId id = *NcclComm::NewUniqueId();
  std::barrier sync(2);
  std::vector<double> seconds;
  auto run = [&](int rank, auto& body) {
    TANDEM_CUDA_CHECK(cudaSetDevice(rank));
    NcclComm comm = *NcclComm::Create(2, rank, id, absl::Now() + absl::Seconds(60));
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

// Communicators are non-blocking (NcclComm): a call may answer ncclInProgress.
void CheckNccl(const NcclComm& comm, ncclResult_t r) {
  absl::Status s = comm.Finish(r, "nccl", absl::Now() + absl::Seconds(60));
  if (!s.ok()) {
    std::fprintf(stderr, "nccl error %s\n", s.ToString().c_str());
    std::abort();
  }
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  using namespace tandem;
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  int iters = 20;
  std::vector<int64_t> token_counts = {512, 2048, 8192};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--iters=", 0) == 0) (void)absl::SimpleAtoi(a.substr(8), &iters);
    if (a.rfind("--tokens=", 0) == 0) {
      token_counts.clear();
      for (absl::string_view s : absl::StrSplit(a.substr(9), ',')) {
        int64_t t;
        if (absl::SimpleAtoi(s, &t)) token_counts.push_back(t);
      }
    }
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
  nlohmann::json out;
  out["shape"] = layout.Describe();
  out["kv_bytes_per_token"] = layout.kv_bytes_per_block() / layout.block_size_tokens;
  out["iters"] = iters;
  std::mt19937 rng(12345);
  std::vector<int32_t> all(kCacheBlocks);
  for (int64_t i = 0; i < kCacheBlocks; ++i) all[i] = static_cast<int32_t>(i);

  auto receiver = *NcclKvReceiver::Start(
      dst.view, {.identity = {.name = "decode", .incarnation = 1, .model_fingerprint = "bench"}});
  auto sender = *NcclKvSender::Create(
      src.view, {.identity = {.name = "prefill", .incarnation = 1, .model_fingerprint = "bench"}});

  for (int64_t tokens : token_counts) {
    const int64_t blocks = (tokens + layout.block_size_tokens - 1) / layout.block_size_tokens;
    const size_t bytes = static_cast<size_t>(blocks) * layout.kv_bytes_per_block();
    const size_t layer_bytes = 2 * blocks * block_bytes;
    nlohmann::json row = {{"tokens", tokens}, {"bytes", bytes}};

    // Raw: one message of the request's size, and one message per layer.
    TANDEM_CUDA_CHECK(cudaSetDevice(0));
    DeviceBuffer a = *DeviceBuffer::Allocate(bytes);
    LaunchFillPattern(a.as<std::byte>(), bytes, 7, 0, nullptr);
    TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
    TANDEM_CUDA_CHECK(cudaSetDevice(1));
    DeviceBuffer b = *DeviceBuffer::Allocate(bytes);
    double raw_one = TimePair(
        iters,
        [&](NcclComm& c, cudaStream_t s) { CheckNccl(c, ncclSend(a.data(), bytes, ncclUint8, 1, c.get(), s)); },
        [&](NcclComm& c, cudaStream_t s) { CheckNccl(c, ncclRecv(b.data(), bytes, ncclUint8, 0, c.get(), s)); });
    double raw_layers = TimePair(
        iters,
        [&](NcclComm& c, cudaStream_t s) {
          for (int64_t l = 0; l < layout.num_layers; ++l) {
            CheckNccl(c, ncclSend(a.as<std::byte>() + l * layer_bytes, layer_bytes, ncclUint8, 1, c.get(), s));
          }
        },
        [&](NcclComm& c, cudaStream_t s) {
          for (int64_t l = 0; l < layout.num_layers; ++l) {
            CheckNccl(c, ncclRecv(b.as<std::byte>() + l * layer_bytes, layer_bytes, ncclUint8, 0, c.get(), s));
          }
        });
    const double raw_best = std::min(raw_one, raw_layers);
    row["raw_one_message_gb_per_s"] = bytes / raw_one / 1e9;
    row["raw_layer_messages_gb_per_s"] = bytes / raw_layers / 1e9;

    // Tandem: StartSend until the receiver reports the arrival, random block tables.
    std::vector<double> seconds, sender_seconds;
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
        return 1;
      }
      if (i >= 3) seconds.push_back(took);
    }
    const double tandem_s = Median(seconds);
    row["tandem_ms"] = tandem_s * 1e3;
    row["tandem_gb_per_s"] = bytes / tandem_s / 1e9;
    row["fraction_of_raw"] = raw_best / tandem_s;

    // No scatter: gather + per-layer K/V messages received straight into contiguous
    // destination blocks (what a decode side reserving contiguous runs would allow).
    TANDEM_CUDA_CHECK(cudaSetDevice(0));
    DeviceBuffer staging = *DeviceBuffer::Allocate(2 * layer_bytes);
    DeviceBuffer ids = *DeviceBuffer::Allocate(sizeof(int32_t) * blocks);
    std::shuffle(all.begin(), all.end(), rng);
    TANDEM_CUDA_CHECK(cudaMemcpy(ids.data(), all.data(), sizeof(int32_t) * blocks, cudaMemcpyHostToDevice));
    CudaEvent ev[2] = {*CudaEvent::Create(), *CudaEvent::Create()};
    const int64_t first_dst = 7;
    double no_scatter = TimePair(
        iters,
        [&](NcclComm& c, cudaStream_t s) {
          for (int64_t l = 0; l < layout.num_layers; ++l) {
            std::byte* slot = staging.as<std::byte>() + (l % 2) * layer_bytes;
            LaunchKvGather({.k = src.view.k[l], .v = src.view.v[l], .block_ids = ids.as<int32_t>(),
                            .count = static_cast<int32_t>(blocks), .block_bytes = block_bytes,
                            .staging = slot}, s);
            CheckNccl(c, ncclGroupStart());
            CheckNccl(c, ncclSend(slot, layer_bytes / 2, ncclUint8, 1, c.get(), s));
            CheckNccl(c, ncclSend(slot + layer_bytes / 2, layer_bytes / 2, ncclUint8, 1, c.get(), s));
            CheckNccl(c, ncclGroupEnd());
          }
        },
        [&](NcclComm& c, cudaStream_t s) {
          for (int64_t l = 0; l < layout.num_layers; ++l) {
            CheckNccl(c, ncclGroupStart());
            CheckNccl(c, ncclRecv(dst.view.k[l] + first_dst * block_bytes, layer_bytes / 2, ncclUint8, 0, c.get(), s));
            CheckNccl(c, ncclRecv(dst.view.v[l] + first_dst * block_bytes, layer_bytes / 2, ncclUint8, 0, c.get(), s));
            CheckNccl(c, ncclGroupEnd());
          }
        });
    (void)ev;
    row["no_scatter_gb_per_s"] = bytes / no_scatter / 1e9;
    row["no_scatter_fraction_of_raw"] = raw_best / no_scatter;
    out["sizes"].push_back(row);
    std::fprintf(stderr, "%lld tokens done\n", static_cast<long long>(tokens));
  }
  sender.reset();
  receiver.reset();
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
