// One side of an NCCL KV transfer in its own process, driven by nccl_kv_transfer_test over
// stdin/stdout (one command per line), so that tests can kill or freeze a peer.
//
//   nccl_kv_test_peer --role=receiver|sender --gpu=N --seed=S [--incarnation=I]
//       [--fingerprint=F] [--shape=small|8b] [--blocks=B] [--recv_timeout_ms=T]
//       [--stop_before_chunk=K]   (sender: raise SIGSTOP before enqueueing chunk K of a transfer)
//       [--max_chunk_bytes=N]     (both: the option of that name; small values make chunks
//                                  that span layers at odd boundaries)
//       [--blocking_communicator[=0]] (sender: KV on a blocking split child communicator or
//                                  not; the option's default without the flag)
//       [--edge_chunk_bytes=N]    (sender: graded chunks' first/last size; 0: uniform)
//       [--edge_ramp=R]           (sender: graded edges grow by R toward the middle)
//       [--register_staging=1]    (sender: staging registered with NCCL on both sides)
//       [--pack_max_ctas=N]       (both: CTAs of the copies that run beside the wire)
//       [--num_staging_slots=N]   (both: the option of that name)
//       [--direct_write[=0]]      (sender: direct writes into the receiver's staging or
//                                  NCCL send/receive; the option's default without the flag)
//
// Prints "READY <endpoint>" (a sender prints "READY -"), then answers:
//   receiver: EXPECT id lease_ms b,b,..  | CANCEL id | WAIT n timeout_ms (ARRIVAL lines, END)
//             CHECK src_seed s,s,.. d,d,..  (dst blocks equal the src pattern's blocks)
//             UNTOUCHED d,d,..              (blocks still hold this peer's own pattern)
//   sender:   SEND endpoint incarnation id tokens deadline_ms s,s,.. (SENT tid)
//             STREAM endpoint incarnation id tokens deadline_ms s,s,.. seed fail_layer end
//               (SENT tid once done): a send overlapped with a simulated forward pass that
//               rewrites the src blocks layer by layer with pattern `seed` (each layer after a
//               host pause and a slow kernel, its event recorded after the write, published
//               through a KvLayerProgress); fails the pass at `fail_layer` (-1: never); then
//               end = token (SetFirstToken 1000 + tokens) or cancel (Cancel)
//             POLL tid timeout_ms (STATUS code message) | CANCEL tid
//   both:     QUIT
// The KV cache's bytes are LaunchFillPattern(seed) over the whole allocation, so a receiver
// can recompute what any sender holds.
#include <signal.h>

#include <cstring>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/cuda_handles.h"
#include "kv_transfer/nccl/kv_pack_kernels.h"
#include "kv_transfer/nccl/nccl_kv_receiver.h"
#include "kv_transfer/nccl/nccl_kv_sender.h"

namespace tandem {
namespace {

std::map<std::string, std::string> ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) continue;
    size_t eq = arg.find('=');
    flags[arg.substr(2, eq - 2)] = eq == std::string::npos ? "1" : arg.substr(eq + 1);
  }
  return flags;
}

int64_t Int(const std::map<std::string, std::string>& flags, const std::string& name,
            int64_t fallback) {
  auto it = flags.find(name);
  int64_t v;
  return it != flags.end() && absl::SimpleAtoi(it->second, &v) ? v : fallback;
}

std::vector<int32_t> Blocks(const std::string& list) {
  std::vector<int32_t> out;
  if (list == "-") return out;
  for (absl::string_view s : absl::StrSplit(list, ',')) {
    int32_t v;
    if (absl::SimpleAtoi(s, &v)) out.push_back(v);
  }
  return out;
}

KvLayout Layout(const std::string& shape) {
  if (shape == "8b") {
    return KvLayout{.dtype = DType::kBF16, .block_size_tokens = 16, .num_layers = 32,
                    .total_kv_heads = 8, .kv_head_begin = 0, .num_kv_heads = 8, .head_dim = 128};
  }
  return KvLayout{.dtype = DType::kBF16, .block_size_tokens = 16, .num_layers = 4,
                  .total_kv_heads = 2, .kv_head_begin = 0, .num_kv_heads = 2, .head_dim = 64};
}

struct DeviceCache {
  DeviceBuffer bytes;
  KvCacheView view;
  size_t region = 0;
};

DeviceCache MakeCache(const KvLayout& layout, int64_t num_blocks, int gpu, uint64_t seed) {
  DeviceCache c;
  c.region = static_cast<size_t>(num_blocks) * layout.BytesPerBlockPerLayer();
  c.bytes = *DeviceBuffer::Allocate(2 * layout.num_layers * c.region);
  LaunchFillPattern(c.bytes.as<std::byte>(), c.bytes.size_bytes(), seed, 0, nullptr);
  TANDEM_CUDA_CHECK(cudaDeviceSynchronize());
  c.view.layout = layout;
  c.view.num_blocks = num_blocks;
  c.view.memory = KvMemory::kCudaDevice;
  c.view.cuda_device = gpu;
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    c.view.k.push_back(c.bytes.as<std::byte>() + 2 * l * c.region);
    c.view.v.push_back(c.bytes.as<std::byte>() + (2 * l + 1) * c.region);
  }
  return c;
}

std::vector<std::byte> ToHost(const DeviceBuffer& buffer) {
  std::vector<std::byte> host(buffer.size_bytes());
  TANDEM_CUDA_CHECK(cudaMemcpy(host.data(), buffer.data(), host.size(), cudaMemcpyDeviceToHost));
  return host;
}

// Whether block `dst[i]` of `have` equals block `src[i]` of `want`, in every layer, K and V.
std::string Compare(const KvLayout& layout, size_t region, const std::vector<std::byte>& have,
                    const std::vector<std::byte>& want, const std::vector<int32_t>& dst,
                    const std::vector<int32_t>& src) {
  const size_t bb = layout.BytesPerBlockPerLayer();
  for (size_t i = 0; i < dst.size(); ++i) {
    for (int64_t r = 0; r < 2 * layout.num_layers; ++r) {
      const std::byte* a = have.data() + r * region + dst[i] * bb;
      const std::byte* b = want.data() + r * region + src[i] * bb;
      if (std::memcmp(a, b, bb) != 0) {
        return "block " + std::to_string(dst[i]) + " region " + std::to_string(r) + " differs";
      }
    }
  }
  return "";
}

int RunReceiver(const std::map<std::string, std::string>& flags, const KvLayout& layout,
                int64_t num_blocks, int gpu, uint64_t seed, const std::string& fingerprint) {
  DeviceCache cache = MakeCache(layout, num_blocks, gpu, seed);
  NcclKvReceiverOptions options{
      .identity = {.name = "decode", .incarnation = static_cast<uint64_t>(Int(flags, "incarnation", 1)),
                   .model_fingerprint = fingerprint},
      .recv_timeout = absl::Milliseconds(Int(flags, "recv_timeout_ms", 10000))};
  if (int64_t chunk = Int(flags, "max_chunk_bytes", 0); chunk > 0) {
    options.max_chunk_bytes = static_cast<size_t>(chunk);
  }
  if (flags.contains("pack_max_ctas")) {
    options.pack_max_ctas = static_cast<int32_t>(Int(flags, "pack_max_ctas", 0));
  }
  if (int64_t slots = Int(flags, "num_staging_slots", 0); slots > 0) {
    options.num_staging_slots = static_cast<int>(slots);
  }
  auto receiver = NcclKvReceiver::Start(cache.view, options);
  if (!receiver.ok()) {
    std::cout << "ERROR " << receiver.status() << std::endl;
    return 1;
  }
  std::cout << "READY " << (*receiver)->endpoint() << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "EXPECT") {
      std::string id, blocks;
      int64_t lease_ms;
      in >> id >> lease_ms >> blocks;
      (*receiver)->Expect(id, Blocks(blocks), absl::Now() + absl::Milliseconds(lease_ms));
      std::cout << "OK" << std::endl;
    } else if (cmd == "CANCEL") {
      std::string id;
      in >> id;
      (*receiver)->Cancel(id);
      std::cout << "OK" << std::endl;
    } else if (cmd == "WAIT") {
      size_t n;
      int64_t timeout_ms;
      in >> n >> timeout_ms;
      std::vector<KvArrival> all;
      absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
      while (all.size() < n && absl::Now() < deadline) {
        for (KvArrival& a : (*receiver)->WaitForArrivals(deadline - absl::Now())) all.push_back(a);
      }
      for (const KvArrival& a : all) {
        std::cout << "ARRIVAL " << a.reservation_id << " " << static_cast<int>(a.status.code())
                  << " " << a.num_tokens << " " << a.first_token_id << " " << a.first_logprob
                  << " " << std::string(a.status.message()).substr(0, 200) << std::endl;
      }
      std::cout << "END" << std::endl;
    } else if (cmd == "CHECK" || cmd == "UNTOUCHED") {
      uint64_t src_seed = seed;
      std::string src_list, dst_list;
      if (cmd == "CHECK") {
        in >> src_seed >> src_list >> dst_list;
      } else {
        in >> dst_list;
        src_list = dst_list;
      }
      DeviceCache want = MakeCache(layout, num_blocks, gpu, src_seed);
      std::string diff = Compare(layout, cache.region, ToHost(cache.bytes), ToHost(want.bytes),
                                 Blocks(dst_list), Blocks(src_list));
      std::cout << cmd << " " << (diff.empty() ? "OK" : "BAD " + diff) << std::endl;
    } else if (cmd == "QUIT") {
      break;
    }
  }
  receiver->reset();
  return 0;
}

int RunSender(const std::map<std::string, std::string>& flags, const KvLayout& layout,
              int64_t num_blocks, int gpu, uint64_t seed, const std::string& fingerprint) {
  DeviceCache cache = MakeCache(layout, num_blocks, gpu, seed);
  int64_t stop_before = Int(flags, "stop_before_chunk", -1);
  NcclKvSenderOptions options{
      .identity = {.name = "prefill", .incarnation = static_cast<uint64_t>(Int(flags, "incarnation", 1)),
                   .model_fingerprint = fingerprint}};
  if (int64_t chunk = Int(flags, "max_chunk_bytes", 0); chunk > 0) {
    options.max_chunk_bytes = static_cast<size_t>(chunk);
  }
  if (flags.contains("blocking_communicator")) {
    options.blocking_communicator = Int(flags, "blocking_communicator", 1) != 0;
  }
  if (int64_t edge = Int(flags, "edge_chunk_bytes", -1); edge >= 0) {
    options.edge_chunk_bytes = static_cast<size_t>(edge);
  }
  if (int64_t ramp = Int(flags, "edge_ramp", 0); ramp > 0) options.edge_ramp = ramp;
  if (flags.contains("pack_max_ctas")) {
    options.pack_max_ctas = static_cast<int32_t>(Int(flags, "pack_max_ctas", 0));
  }
  if (int64_t slots = Int(flags, "num_staging_slots", 0); slots > 0) {
    options.num_staging_slots = static_cast<int>(slots);
  }
  if (flags.contains("register_staging")) {
    options.register_staging = Int(flags, "register_staging", 1) != 0;
  }
  if (flags.contains("direct_write")) {
    options.direct_write = Int(flags, "direct_write", 1) != 0;
  }
  if (stop_before >= 0) {
    options.before_chunk_for_test = [stop_before](int64_t index) {
      if (index == stop_before) raise(SIGSTOP);
    };
  }
  auto sender = NcclKvSender::Create(cache.view, options);
  if (!sender.ok()) {
    std::cout << "ERROR " << sender.status() << std::endl;
    return 1;
  }
  CudaStream forward = *CudaStream::Create();  // the simulated forward pass (STREAM)
  DeviceBuffer scratch = *DeviceBuffer::Allocate(256u << 20);
  std::vector<CudaEvent> layer_events;
  for (int64_t l = 0; l < layout.num_layers; ++l) {
    layer_events.push_back(*CudaEvent::CreateWithoutTiming());
  }
  std::cout << "READY -" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "SEND") {
      KvSendRequest request;
      int64_t deadline_ms;
      std::string blocks;
      in >> request.endpoint >> request.receiver_incarnation >> request.reservation_id >>
          request.num_tokens >> deadline_ms >> blocks;
      request.src_blocks = Blocks(blocks);
      request.first_token_id = 1000 + request.num_tokens;
      request.first_logprob = -0.25f;
      request.deadline = absl::Now() + absl::Milliseconds(deadline_ms);
      std::cout << "SENT " << (*sender)->StartSend(std::move(request)) << std::endl;
    } else if (cmd == "STREAM") {
      KvSendRequest request;
      int64_t deadline_ms, fail_layer;
      uint64_t new_seed;
      std::string blocks, end;
      in >> request.endpoint >> request.receiver_incarnation >> request.reservation_id >>
          request.num_tokens >> deadline_ms >> blocks >> new_seed >> fail_layer >> end;
      request.src_blocks = Blocks(blocks);
      request.deadline = absl::Now() + absl::Milliseconds(deadline_ms);
      request.first_token_pending = true;
      auto progress = std::make_shared<KvLayerProgress>(layout.num_layers);
      request.progress = progress;
      const std::vector<int32_t> src = request.src_blocks;
      const int32_t tokens = request.num_tokens;
      const uint64_t tid = (*sender)->StartSend(std::move(request));
      const size_t bb = layout.BytesPerBlockPerLayer();
      for (int64_t l = 0; l < layout.num_layers; ++l) {
        if (l == fail_layer) {
          progress->Fail(absl::InternalError(absl::StrCat("forward pass failed at layer ", l)));
          break;
        }
        absl::SleepFor(absl::Milliseconds(2));
        // A slow kernel first, so a gather not ordered after the event would read old bytes.
        LaunchFillPattern(scratch.as<std::byte>(), scratch.size_bytes(), l, 0, forward.get());
        for (int32_t b : src) {
          for (int kv = 0; kv < 2; ++kv) {
            const size_t offset = (2 * l + kv) * cache.region + static_cast<size_t>(b) * bb;
            LaunchFillPattern(cache.bytes.as<std::byte>() + offset, bb, new_seed, offset / 8,
                              forward.get());
          }
        }
        layer_events[l].Record(forward.get());
        progress->LayerWritten(l, layer_events[l].get());
      }
      if (fail_layer < 0) {
        forward.Synchronize();
        progress->Complete();
      }
      if (end == "cancel") {
        (*sender)->Cancel(tid);
      } else {
        (*sender)->SetFirstToken(tid, {.token_id = 1000 + tokens, .logprob = -0.25f});
      }
      std::cout << "SENT " << tid << std::endl;
    } else if (cmd == "POLL") {
      uint64_t id;
      int64_t timeout_ms;
      in >> id >> timeout_ms;
      absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
      std::optional<absl::Status> status;
      while (!(status = (*sender)->Poll(id)) && absl::Now() < deadline) {
        absl::SleepFor(absl::Microseconds(200));
      }
      if (status) {
        std::cout << "STATUS " << static_cast<int>(status->code()) << " "
                  << std::string(status->message()).substr(0, 200) << std::endl;
      } else {
        std::cout << "STATUS -1 still running" << std::endl;
      }
    } else if (cmd == "CANCEL") {
      uint64_t id;
      in >> id;
      (*sender)->Cancel(id);
      std::cout << "OK" << std::endl;
    } else if (cmd == "QUIT") {
      break;
    }
  }
  sender->reset();
  return 0;
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);
  auto flags = tandem::ParseFlags(argc, argv);
  int gpu = static_cast<int>(tandem::Int(flags, "gpu", 0));
  TANDEM_CUDA_CHECK(cudaSetDevice(gpu));
  tandem::KvLayout layout = tandem::Layout(flags.count("shape") ? flags["shape"] : "small");
  int64_t num_blocks = tandem::Int(flags, "blocks", 64);
  uint64_t seed = static_cast<uint64_t>(tandem::Int(flags, "seed", 1));
  std::string fingerprint =
      (flags.count("fingerprint") ? flags["fingerprint"] : "llama-test") + "/" + layout.Describe();
  if (flags["role"] == "receiver") {
    return tandem::RunReceiver(flags, layout, num_blocks, gpu, seed, fingerprint);
  }
  return tandem::RunSender(flags, layout, num_blocks, gpu, seed, fingerprint);
}
