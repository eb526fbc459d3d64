// The NCCL KV transport between two GPUs, one process per rank (nccl_kv_test_peer, started
// and driven by this test so that it can freeze or kill either side): bytes received equal
// bytes sent for random block tables; handshakes refuse mismatched peers; cancelled and
// unknown reservations are drained and never written; a frozen or killed peer is detected
// within its deadline and the next transfers, on a rebuilt communicator, succeed.
#include <cuda_runtime.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <iterator>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace tandem {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string PeerBinary() {
  if (const char* env = std::getenv("TANDEM_NCCL_PEER_BIN")) return env;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string path(self, n > 0 ? n : 0);
  return path.substr(0, path.rfind('/')) + "/nccl_kv_test_peer";
}

// A peer process, talking one line at a time.
class Peer {
 public:
  explicit Peer(std::vector<std::string> args) {
    std::signal(SIGPIPE, SIG_IGN);  // a dead peer fails the test's checks, not the test process
    int in[2], out[2];
    EXPECT_EQ(pipe(in), 0);
    EXPECT_EQ(pipe(out), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, in[1]);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::string binary = PeerBinary();
    args.insert(args.begin(), binary);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ), 0)
        << binary;
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~Peer() {
    if (pid_ > 0) {
      Say("QUIT");
      close(to_);
      // A peer that does not quit within 20 s is killed.
      int status = 0;
      pid_t done = 0;
      for (int i = 0; i < 2000 && (done = waitpid(pid_, &status, WNOHANG)) == 0; ++i) usleep(10000);
      if (done == pid_ && WIFSIGNALED(status) && !signalled_) {
        ADD_FAILURE() << "peer " << pid_ << " died of signal " << WTERMSIG(status);
      }
      if (done == pid_) pid_ = -1;
      Kill();
    }
    close(from_);
  }
  void Say(const std::string& line) {
    std::string l = line + "\n";
    (void)!write(to_, l.data(), l.size());
  }
  // The next line, or "" after `timeout`.
  std::string Line(absl::Duration timeout = absl::Seconds(60)) {
    absl::Time deadline = absl::Now() + timeout;
    while (true) {
      size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return "";
      pollfd p{.fd = from_, .events = POLLIN, .revents = 0};
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char chunk[4096];
      ssize_t n = read(from_, chunk, sizeof(chunk));
      if (n <= 0) return "";
      buffer_.append(chunk, n);
    }
  }
  std::string Ask(const std::string& line, absl::Duration timeout = absl::Seconds(60)) {
    Say(line);
    return Line(timeout);
  }
  void Signal(int signal) {
    signalled_ = true;
    kill(pid_, signal);
  }
  // Whether the process stopped itself (SIGSTOP: state 'T' in /proc/pid/stat) in `timeout`.
  bool WaitStopped(absl::Duration timeout) {
    absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      std::ifstream stat(absl::StrCat("/proc/", pid_, "/stat"));
      std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
      size_t paren = text.rfind(')');
      if (paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'T') {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }
  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  bool signalled_ = false;  // the test signalled it: its death is expected
  int to_ = -1, from_ = -1;
  std::string buffer_;
};

struct Arrival {
  std::string id;
  int code = -1;
  int tokens = 0;
  int first_token = 0;
  std::string message;
};

class NcclKvTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count < 2) {
      GTEST_SKIP() << "needs two GPUs (found " << count << ")";
    }
  }
  // Starts a receiver on GPU 1; returns its endpoint.
  std::unique_ptr<Peer> Receiver(std::string* endpoint, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--role=receiver", "--gpu=1", "--seed=200"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto peer = std::make_unique<Peer>(args);
    std::string ready = peer->Line();
    EXPECT_THAT(ready, StartsWith("READY ")) << ready;
    *endpoint = ready.size() > 6 ? ready.substr(6) : "";
    return peer;
  }
  std::unique_ptr<Peer> Sender(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--role=sender", "--gpu=0", "--seed=100"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto peer = std::make_unique<Peer>(args);
    EXPECT_EQ(peer->Line(), "READY -");
    return peer;
  }
  static std::string List(const std::vector<int32_t>& blocks) {
    return blocks.empty() ? "-" : absl::StrJoin(blocks, ",");
  }
  // Sends and returns the transfer id.
  static std::string Send(Peer& sender, const std::string& endpoint, int incarnation,
                          const std::string& id, int tokens, const std::vector<int32_t>& src,
                          int deadline_ms = 30000) {
    std::string sent = sender.Ask(absl::StrCat("SEND ", endpoint, " ", incarnation, " ", id, " ",
                                               tokens, " ", deadline_ms, " ", List(src)));
    EXPECT_THAT(sent, StartsWith("SENT ")) << sent;
    return sent.size() > 5 ? sent.substr(5) : "0";
  }
  // Polls until the transfer ends; returns "code message".
  static std::string Status(Peer& sender, const std::string& transfer, int timeout_ms = 60000) {
    std::string status = sender.Ask(absl::StrCat("POLL ", transfer, " ", timeout_ms),
                                    absl::Milliseconds(timeout_ms + 30000));
    return status.size() > 7 ? status.substr(7) : status;
  }
  // One whole transfer that must succeed: the receiver expects `id` in `dst`, the sender
  // sends `src` (incarnation 1), and the blocks arrive bit for bit.
  static void TransferAndCheck(Peer& receiver, Peer& sender, const std::string& endpoint,
                               const std::string& id, int tokens,
                               const std::vector<int32_t>& src, const std::vector<int32_t>& dst) {
    EXPECT_EQ(receiver.Ask(absl::StrCat("EXPECT ", id, " 60000 ", List(dst))), "OK");
    EXPECT_EQ(Status(sender, Send(sender, endpoint, 1, id, tokens, src)), "0 ");
    std::vector<Arrival> arrivals = Wait(receiver, 1);
    ASSERT_EQ(arrivals.size(), 1u);
    EXPECT_EQ(arrivals[0].id, id);
    EXPECT_EQ(arrivals[0].code, 0) << arrivals[0].message;
    EXPECT_EQ(receiver.Ask(absl::StrCat("CHECK 100 ", List(src), " ", List(dst))), "CHECK OK");
  }
  static std::vector<Arrival> Wait(Peer& receiver, int n, int timeout_ms = 60000) {
    receiver.Say(absl::StrCat("WAIT ", n, " ", timeout_ms));
    std::vector<Arrival> out;
    while (true) {
      std::string line = receiver.Line(absl::Milliseconds(timeout_ms + 30000));
      if (line == "END" || line.empty()) return out;
      std::istringstream in(line);
      std::string tag;
      Arrival a;
      float logprob;
      in >> tag >> a.id >> a.code >> a.tokens >> a.first_token >> logprob;
      std::getline(in, a.message);
      out.push_back(a);
    }
  }
};

// Eight requests of random block tables from one sender started with `sender_flags`, each
// checked bit for bit on the receiver.
class NcclKvRandomTablesTest : public NcclKvTransferTest {
 protected:
  void SendRandomTablesAndCheck(std::vector<std::string> sender_flags,
                                std::vector<std::string> receiver_flags = {}) {
    std::string endpoint;
    auto receiver = Receiver(&endpoint, receiver_flags);
    auto sender = Sender(sender_flags);
    std::mt19937 rng(std::random_device{}());
    std::vector<int32_t> all(64);
    for (int i = 0; i < 64; ++i) all[i] = i;
    struct Request { std::string id; std::vector<int32_t> src, dst; int tokens; };
    std::vector<Request> requests;
    std::vector<int32_t> free_dst = all;
    std::shuffle(free_dst.begin(), free_dst.end(), rng);
    for (int r = 0; r < 8; ++r) {
      int blocks = 1 + static_cast<int>(rng() % 7);  // 8 requests x <= 7 blocks <= 64 dst blocks
      Request q{.id = "r" + std::to_string(r)};
      std::vector<int32_t> src = all;
      std::shuffle(src.begin(), src.end(), rng);
      q.src.assign(src.begin(), src.begin() + blocks);
      q.dst.assign(free_dst.end() - blocks, free_dst.end());
      free_dst.resize(free_dst.size() - blocks);
      q.tokens = (blocks - 1) * 16 + 1 + static_cast<int>(rng() % 16);
      EXPECT_EQ(receiver->Ask(absl::StrCat("EXPECT ", q.id, " 60000 ", List(q.dst))), "OK");
      requests.push_back(q);
    }
    std::vector<std::string> transfers;
    for (const Request& q : requests) {
      transfers.push_back(Send(*sender, endpoint, 1, q.id, q.tokens, q.src));
    }
    for (const std::string& t : transfers) EXPECT_EQ(Status(*sender, t), "0 ") << t;
    std::vector<Arrival> arrivals = Wait(*receiver, 8);
    ASSERT_EQ(arrivals.size(), 8u);
    for (size_t i = 0; i < arrivals.size(); ++i) {
      EXPECT_EQ(arrivals[i].id, requests[i].id);  // in sequence order
      EXPECT_EQ(arrivals[i].code, 0) << arrivals[i].message;
      EXPECT_EQ(arrivals[i].tokens, requests[i].tokens);
      EXPECT_EQ(arrivals[i].first_token, 1000 + requests[i].tokens);
    }
    for (const Request& q : requests) {
      EXPECT_EQ(receiver->Ask(absl::StrCat("CHECK 100 ", List(q.src), " ", List(q.dst))), "CHECK OK")
          << q.id;
    }
    EXPECT_EQ(receiver->Ask("UNTOUCHED " + List(free_dst)), "UNTOUCHED OK");
  }
};

TEST_F(NcclKvRandomTablesTest, ReceivedBytesEqualSentBytesForRandomBlockTables) {
  // 5 (layer, block) units of 8 KiB per chunk: chunks span layers at odd boundaries.
  SendRandomTablesAndCheck({"--max_chunk_bytes=40960"});
}

TEST_F(NcclKvRandomTablesTest, GradedChunksOnTheNonBlockingCommunicatorAreBitExact) {
  // 2-unit first and last chunks, balanced middle chunks of at most 5 units.
  SendRandomTablesAndCheck({"--blocking_communicator=0", "--max_chunk_bytes=40960",
                            "--edge_chunk_bytes=16384"});
}

TEST_F(NcclKvRandomTablesTest, RampedEdgesAreBitExact) {
  // 1-unit edges growing x2 (1, 2, 4 units) toward balanced middles of at most 8 units.
  SendRandomTablesAndCheck({"--max_chunk_bytes=65536", "--edge_chunk_bytes=8192",
                            "--edge_ramp=2"});
}

TEST_F(NcclKvRandomTablesTest, CappedCopyKernelsAreBitExact) {
  // Every gather but the first and every scatter but the last on 3 CTAs, each looping over
  // several units of a chunk (the capped kernel), with ramped edges (1, 2, 4 units).
  SendRandomTablesAndCheck({"--max_chunk_bytes=65536", "--edge_chunk_bytes=8192",
                            "--edge_ramp=2", "--pack_max_ctas=3"},
                           {"--max_chunk_bytes=65536", "--pack_max_ctas=3"});
}

TEST_F(NcclKvRandomTablesTest, RegisteredStagingIsBitExact) {
  // Both sides' staging registered with the KV communicator: NCCL's direct copy path.
  SendRandomTablesAndCheck({"--max_chunk_bytes=65536", "--edge_chunk_bytes=16384",
                            "--register_staging=1", "--direct_write=0"});
}

TEST_F(NcclKvRandomTablesTest, SendReceivePathIsBitExact) {
  // NCCL send/receive between unregistered staging (the path without direct writes), with
  // ramped edges and capped copies.
  SendRandomTablesAndCheck({"--max_chunk_bytes=65536", "--edge_chunk_bytes=8192",
                            "--edge_ramp=2", "--pack_max_ctas=3", "--direct_write=0"},
                           {"--max_chunk_bytes=65536", "--pack_max_ctas=3"});
}

TEST_F(NcclKvRandomTablesTest, DirectWritesWithThreeSlotsAreBitExact) {
  // Direct writes into a 3-slot receiver ring: slot notices for chunks 3 apart.
  SendRandomTablesAndCheck({"--max_chunk_bytes=40960", "--edge_chunk_bytes=8192",
                            "--num_staging_slots=3", "--direct_write=1"},
                           {"--max_chunk_bytes=40960", "--num_staging_slots=3"});
}

TEST_F(NcclKvTransferTest, EightBShapeTwoThousandTokens) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint, {"--shape=8b", "--blocks=160"});
  auto sender = Sender({"--shape=8b", "--blocks=160"});
  std::vector<int32_t> src(128), dst(128);
  std::mt19937 rng(std::random_device{}());
  std::vector<int32_t> all(160);
  for (int i = 0; i < 160; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), rng);
  src.assign(all.begin(), all.begin() + 128);
  std::shuffle(all.begin(), all.end(), rng);
  dst.assign(all.begin(), all.begin() + 128);
  TransferAndCheck(*receiver, *sender, endpoint, "big", 2048, src, dst);
}

// Four multi-chunk transfers queued at once (40 blocks each: 16 + 48 + 16 MiB): each one's
// first chunks reuse staging slots the receiver may still be scattering from the one before,
// which the sender must wait for (direct writes have no rendezvous).
TEST_F(NcclKvTransferTest, EightBShapeBackToBackTransfersAreBitExact) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint, {"--shape=8b", "--blocks=160"});
  auto sender = Sender({"--shape=8b", "--blocks=160"});
  std::mt19937 rng(std::random_device{}());
  std::vector<int32_t> all(160);
  std::iota(all.begin(), all.end(), 0);
  std::vector<int32_t> dst_pool = all;
  std::shuffle(dst_pool.begin(), dst_pool.end(), rng);
  struct Request { std::string id; std::vector<int32_t> src, dst; };
  std::vector<Request> requests;
  for (int r = 0; r < 4; ++r) {
    Request q{.id = "b" + std::to_string(r)};
    std::shuffle(all.begin(), all.end(), rng);
    q.src.assign(all.begin(), all.begin() + 40);
    q.dst.assign(dst_pool.begin() + 40 * r, dst_pool.begin() + 40 * (r + 1));
    EXPECT_EQ(receiver->Ask(absl::StrCat("EXPECT ", q.id, " 60000 ", List(q.dst))), "OK");
    requests.push_back(std::move(q));
  }
  std::vector<std::string> transfers;
  for (const Request& q : requests) {
    transfers.push_back(Send(*sender, endpoint, 1, q.id, 40 * 16, q.src));
  }
  for (const std::string& t : transfers) EXPECT_EQ(Status(*sender, t), "0 ") << t;
  std::vector<Arrival> arrivals = Wait(*receiver, 4);
  ASSERT_EQ(arrivals.size(), 4u);
  for (const Arrival& a : arrivals) EXPECT_EQ(a.code, 0) << a.id << ": " << a.message;
  for (const Request& q : requests) {
    EXPECT_EQ(receiver->Ask(absl::StrCat("CHECK 100 ", List(q.src), " ", List(q.dst))),
              "CHECK OK")
        << q.id;
  }
}

// Overlap with the forward pass: the sender reads each layer only after the pass wrote it
// (the src blocks change pattern during the transfer, each layer behind a slow kernel);
// what arrives is the new pattern, with the first token supplied after the last layer.
TEST_F(NcclKvTransferTest, StreamsKvAsTheForwardPassWritesEachLayer) {
  for (std::string shape : {"small", "8b"}) {
    SCOPED_TRACE(shape);
    std::string endpoint;
    std::vector<std::string> flags = {"--shape=" + shape, "--blocks=160"};
    if (shape == "small") flags.push_back("--max_chunk_bytes=40960");  // odd layer boundaries
    auto receiver = Receiver(&endpoint, flags);
    auto sender = Sender(flags);
    std::mt19937 rng(std::random_device{}());
    std::vector<int32_t> all(160);
    for (int i = 0; i < 160; ++i) all[i] = i;
    std::shuffle(all.begin(), all.end(), rng);
    std::vector<int32_t> src(all.begin(), all.begin() + 128);
    std::shuffle(all.begin(), all.end(), rng);
    std::vector<int32_t> dst(all.begin(), all.begin() + 128);
    EXPECT_EQ(receiver->Ask("EXPECT s 60000 " + List(dst)), "OK");
    std::string sent = sender->Ask(absl::StrCat("STREAM ", endpoint, " 1 s 2048 30000 ", List(src),
                                                " 300 -1 token"));
    ASSERT_THAT(sent, StartsWith("SENT "));
    EXPECT_EQ(Status(*sender, sent.substr(5)), "0 ");
    std::vector<Arrival> arrivals = Wait(*receiver, 1);
    ASSERT_EQ(arrivals.size(), 1u);
    EXPECT_EQ(arrivals[0].code, 0) << arrivals[0].message;
    EXPECT_EQ(arrivals[0].first_token, 1000 + 2048);
    EXPECT_EQ(receiver->Ask(absl::StrCat("CHECK 300 ", List(src), " ", List(dst))), "CHECK OK");
  }
}

// A forward pass that fails mid-transfer, or a transfer cancelled before its first token,
// fails only that reservation (the trailer says so); the pair stays in step and the next
// transfer on it succeeds.
TEST_F(NcclKvTransferTest, FailedOrCancelledStreamFailsOnlyItsReservation) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint);
  auto sender = Sender({"--max_chunk_bytes=40960"});
  EXPECT_EQ(receiver->Ask("EXPECT f 60000 10,11,12"), "OK");
  std::string sent = sender->Ask(absl::StrCat("STREAM ", endpoint, " 1 f 40 30000 1,2,3 300 2 token"));
  ASSERT_THAT(sent, StartsWith("SENT "));
  std::string status = Status(*sender, sent.substr(5));
  EXPECT_THAT(status, StartsWith("13 "));  // INTERNAL: the pass's failure
  EXPECT_THAT(status, HasSubstr("forward pass failed at layer 2"));
  std::vector<Arrival> arrivals = Wait(*receiver, 1);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].code, 13) << arrivals[0].message;
  EXPECT_THAT(arrivals[0].message, HasSubstr("forward pass failed at layer 2"));

  EXPECT_EQ(receiver->Ask("EXPECT c 60000 20,21"), "OK");
  sent = sender->Ask(absl::StrCat("STREAM ", endpoint, " 1 c 20 30000 4,5 300 -1 cancel"));
  ASSERT_THAT(sent, StartsWith("SENT "));
  EXPECT_THAT(Status(*sender, sent.substr(5)), StartsWith("1 "));  // CANCELLED
  arrivals = Wait(*receiver, 1);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].code, 1) << arrivals[0].message;

  TransferAndCheck(*receiver, *sender, endpoint, "ok", 20, {7, 8}, {30, 31});
}

TEST_F(NcclKvTransferTest, HandshakeRefusesAnotherModel) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint, {"--fingerprint=llama-A"});
  auto sender = Sender({"--fingerprint=llama-B"});
  std::string status = Status(*sender, Send(*sender, endpoint, 1, "r", 5, {1}));
  EXPECT_THAT(status, StartsWith("9 "));  // FAILED_PRECONDITION
  EXPECT_THAT(status, HasSubstr("kv_layout mismatch"));
  // And a restarted receiver (another incarnation) is refused too.
  auto sender2 = Sender({"--fingerprint=llama-A"});
  status = Status(*sender2, Send(*sender2, endpoint, 7, "r", 5, {1}));
  EXPECT_THAT(status, HasSubstr("receiver incarnation is 1, sender expected 7"));
}

TEST_F(NcclKvTransferTest, HandshakeRefusesASenderOnTheReceiversGpu) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint, {"--gpu=0"});  // the sender's GPU
  auto sender = Sender();
  std::string status = Status(*sender, Send(*sender, endpoint, 1, "r", 5, {1}));
  EXPECT_THAT(status, StartsWith("9 "));  // FAILED_PRECONDITION, not NCCL's "invalid usage"
  EXPECT_THAT(status, HasSubstr("NCCL cannot pair a GPU with itself"));
}

TEST_F(NcclKvTransferTest, CancelledAndUnknownReservationsAreDrainedNotWritten) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint);
  auto sender = Sender();
  EXPECT_EQ(receiver->Ask("EXPECT gone 60000 10,11,12"), "OK");
  EXPECT_EQ(receiver->Ask("CANCEL gone"), "OK");
  // Sent to a cancelled and to a never-expected reservation: the sender's side completes,
  // the receiver drains them and writes nothing, and the pair stays in step.
  EXPECT_EQ(Status(*sender, Send(*sender, endpoint, 1, "gone", 40, {1, 2, 3})), "0 ");
  EXPECT_EQ(Status(*sender, Send(*sender, endpoint, 1, "unknown", 40, {4, 5, 6})), "0 ");
  TransferAndCheck(*receiver, *sender, endpoint, "next", 20, {7, 8}, {20, 21});
  EXPECT_EQ(receiver->Ask("UNTOUCHED 10,11,12"), "UNTOUCHED OK");
  // A reservation too small for what arrives fails and stays unwritten.
  EXPECT_EQ(receiver->Ask("EXPECT small 60000 30"), "OK");
  EXPECT_EQ(Status(*sender, Send(*sender, endpoint, 1, "small", 40, {1, 2, 3})), "0 ");
  std::vector<Arrival> arrivals = Wait(*receiver, 1);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].code, 3) << arrivals[0].message;  // INVALID_ARGUMENT
  EXPECT_EQ(receiver->Ask("UNTOUCHED 30"), "UNTOUCHED OK");
  // A lease with no KV expires.
  EXPECT_EQ(receiver->Ask("EXPECT lease 100 40"), "OK");
  arrivals = Wait(*receiver, 1, 5000);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].code, 4);  // DEADLINE_EXCEEDED
}

TEST_F(NcclKvTransferTest, FrozenThenKilledReceiverIsDetectedAndThePairRebuilt) {
  // The 8B shape: a 2k-token transfer (256 MiB) is far more than NCCL buffers for a peer
  // that posted no receive, so a frozen receiver really stops it.
  std::string endpoint;
  auto receiver = Receiver(&endpoint, {"--shape=8b", "--blocks=160"});
  auto sender = Sender({"--shape=8b", "--blocks=160"});
  EXPECT_EQ(receiver->Ask("EXPECT a 60000 1,2"), "OK");
  EXPECT_EQ(Status(*sender, Send(*sender, endpoint, 1, "a", 20, {3, 4})), "0 ");
  // Frozen receiver: the send cannot complete; its 2 s deadline is enforced.
  receiver->Signal(SIGSTOP);
  absl::Time start = absl::Now();
  std::vector<int32_t> many(128);
  for (int i = 0; i < 128; ++i) many[i] = i;
  std::string stuck = Send(*sender, endpoint, 1, "b", 2048, many, 2000);
  std::string queued = Send(*sender, endpoint, 1, "c", 20, {3, 4});
  EXPECT_EQ(sender->Ask("CANCEL " + queued), "OK");
  std::string status = Status(*sender, stuck);
  absl::Duration took = absl::Now() - start;
  EXPECT_THAT(status, StartsWith("4 ")) << status;  // DEADLINE_EXCEEDED
  EXPECT_LT(took, absl::Seconds(6)) << took;
  EXPECT_THAT(Status(*sender, queued), StartsWith("1 "));  // CANCELLED
  // Killed: the closed connection is noticed at once.
  receiver->Kill();
  start = absl::Now();
  status = Status(*sender, Send(*sender, endpoint, 1, "d", 20, {3, 4}, 10000));
  EXPECT_THAT(status, StartsWith("14 ")) << status;  // UNAVAILABLE
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // A restarted receiver: same sender process, new communicator.
  std::string endpoint2;
  auto receiver2 = Receiver(&endpoint2, {"--incarnation=2", "--shape=8b", "--blocks=160"});
  for (int r = 0; r < 3; ++r) {
    std::string id = "after" + std::to_string(r);
    EXPECT_EQ(receiver2->Ask(absl::StrCat("EXPECT ", id, " 60000 ", 10 + r, ",", 20 + r)), "OK");
    EXPECT_EQ(Status(*sender, Send(*sender, endpoint2, 2, id, 30, {r, 40 + r})), "0 ");
  }
  std::vector<Arrival> arrivals = Wait(*receiver2, 3);
  ASSERT_EQ(arrivals.size(), 3u);
  for (const Arrival& a : arrivals) EXPECT_EQ(a.code, 0) << a.message;
  EXPECT_EQ(receiver2->Ask("CHECK 100 2,42 12,22"), "CHECK OK");
}

TEST_F(NcclKvTransferTest, FrozenThenKilledSenderIsDetectedByTheReceiver) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint, {"--recv_timeout_ms=1500"});
  {
    // 3 blocks x 4 layers, 3 units (24 KiB) per chunk: 4 chunks; the sender freezes after
    // enqueueing 2.
    auto sender = Sender({"--stop_before_chunk=2", "--max_chunk_bytes=24576"});
    EXPECT_EQ(receiver->Ask("EXPECT x 60000 1,2,3"), "OK");
    absl::Time start = absl::Now();
    Send(*sender, endpoint, 1, "x", 40, {4, 5, 6});
    std::vector<Arrival> arrivals = Wait(*receiver, 1, 10000);
    ASSERT_EQ(arrivals.size(), 1u);
    EXPECT_EQ(arrivals[0].id, "x");
    EXPECT_EQ(arrivals[0].code, 4) << arrivals[0].message;  // DEADLINE_EXCEEDED
    EXPECT_LT(absl::Now() - start, absl::Seconds(5));
    sender->Kill();
  }
  // A killed sender mid-transfer: the closed connection is noticed before recv_timeout.
  {
    auto sender = Sender({"--stop_before_chunk=1", "--max_chunk_bytes=24576"});
    EXPECT_EQ(receiver->Ask("EXPECT y 60000 1,2,3"), "OK");
    Send(*sender, endpoint, 1, "y", 40, {4, 5, 6});
    // Stopped before chunk 1: connected, header and chunk 0 sent. (A fixed 300 ms sleep
    // could kill it during communicator init, before the receiver knows of "y".)
    ASSERT_TRUE(sender->WaitStopped(absl::Seconds(20)));
    absl::Time start = absl::Now();
    sender->Kill();
    std::vector<Arrival> arrivals = Wait(*receiver, 1, 10000);
    ASSERT_EQ(arrivals.size(), 1u);
    EXPECT_EQ(arrivals[0].id, "y");
    EXPECT_NE(arrivals[0].code, 0) << arrivals[0].message;
    EXPECT_LT(absl::Now() - start, absl::Seconds(1.5));
  }
  // A new sender process builds a new communicator with the same receiver.
  auto sender = Sender();
  TransferAndCheck(*receiver, *sender, endpoint, "z", 40, {4, 5, 6}, {7, 8, 9});
}

TEST_F(NcclKvTransferTest, BlockingDataCommunicatorIsBitExactAndBoundedOnAFrozenSender) {
  std::string endpoint;
  auto receiver = Receiver(&endpoint, {"--recv_timeout_ms=1500"});
  {
    // KV on the blocking split child, chunks spanning layers: bit exact.
    auto sender = Sender({"--blocking_communicator", "--max_chunk_bytes=40960"});
    TransferAndCheck(*receiver, *sender, endpoint, "a", 100, {6, 5, 4, 3, 2, 1, 0},
                     {10, 11, 12, 13, 14, 15, 16});
  }
  {
    // Frozen mid-transfer: the receiver still fails the reservation within recv_timeout.
    auto sender = Sender({"--blocking_communicator", "--stop_before_chunk=2",
                          "--max_chunk_bytes=24576"});
    EXPECT_EQ(receiver->Ask("EXPECT x 60000 1,2,3"), "OK");
    Send(*sender, endpoint, 1, "x", 40, {4, 5, 6});
    ASSERT_TRUE(sender->WaitStopped(absl::Seconds(20)));
    absl::Time start = absl::Now();
    std::vector<Arrival> arrivals = Wait(*receiver, 1, 10000);
    ASSERT_EQ(arrivals.size(), 1u);
    EXPECT_EQ(arrivals[0].code, 4) << arrivals[0].message;  // DEADLINE_EXCEEDED
    EXPECT_LT(absl::Now() - start, absl::Seconds(4));
    sender->Kill();
  }
  auto sender = Sender({"--blocking_communicator"});
  TransferAndCheck(*receiver, *sender, endpoint, "z", 40, {4, 5, 6}, {7, 8, 9});
}

}  // namespace
}  // namespace tandem
