// KV transports: bytes received equal bytes sent for random block tables; handshakes refuse
// mismatched peers; leases expire; cancelled reservations are never written; hostile bytes
// on the socket do not hurt the receiver.
#include <sys/socket.h>

#include <cstring>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv_transfer/loopback/loopback_kv_transfer.h"
#include "kv_transfer/send_queue.h"
#include "kv_transfer/tcp/tcp_kv_receiver.h"
#include "kv_transfer/tcp/tcp_kv_sender.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kBlocks = 32;

KvLayout TestLayout() {
  return KvLayout{.dtype = DType::kF32, .block_size_tokens = 4, .num_layers = 3,
                  .total_kv_heads = 2, .kv_head_begin = 0, .num_kv_heads = 2, .head_dim = 8};
}

// A host KV cache filled with random bytes.
struct HostCache {
  explicit HostCache(uint32_t seed) {
    KvLayout layout = TestLayout();
    size_t region = kBlocks * layout.BytesPerBlockPerLayer();
    bytes.resize(2 * layout.num_layers * region);
    std::mt19937 rng(seed);
    for (std::byte& b : bytes) b = static_cast<std::byte>(rng());
    view.layout = layout;
    view.num_blocks = kBlocks;
    for (int64_t l = 0; l < layout.num_layers; ++l) {
      view.k.push_back(bytes.data() + 2 * l * region);
      view.v.push_back(bytes.data() + (2 * l + 1) * region);
    }
  }
  bool BlockEquals(const HostCache& other, int32_t mine, int32_t theirs) const {
    size_t n = view.layout.BytesPerBlockPerLayer();
    for (int64_t l = 0; l < view.layout.num_layers; ++l) {
      if (std::memcmp(view.KBlock(l, mine), other.view.KBlock(l, theirs), n) != 0) return false;
      if (std::memcmp(view.VBlock(l, mine), other.view.VBlock(l, theirs), n) != 0) return false;
    }
    return true;
  }
  std::vector<std::byte> bytes;
  KvCacheView view;
};

KvPeerIdentity Identity(const std::string& name, uint64_t incarnation,
                        std::string fingerprint = "llama-test/" + TestLayout().Describe()) {
  return {.name = name, .incarnation = incarnation, .model_fingerprint = fingerprint};
}

std::vector<KvArrival> WaitForArrivals(KvReceiver& receiver, size_t count) {
  std::vector<KvArrival> all;
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (all.size() < count && absl::Now() < deadline) {
    for (KvArrival& a : receiver.PollArrivals()) all.push_back(std::move(a));
    absl::SleepFor(absl::Milliseconds(2));
  }
  return all;
}

absl::Status WaitForSend(KvSender& sender, uint64_t id) {
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (std::optional<absl::Status> s = sender.Poll(id)) return *s;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return absl::DeadlineExceededError("test gave up waiting");
}

class TcpKvTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto receiver = TcpKvReceiver::Start(dst_.view, {.identity = Identity("decode-0", 77)});
    ASSERT_TRUE(receiver.ok()) << receiver.status();
    receiver_ = std::move(*receiver);
  }
  KvSendRequest Request(std::string id, std::vector<int32_t> src, int32_t tokens) {
    return {.endpoint = receiver_->endpoint(), .receiver_incarnation = 77,
            .reservation_id = std::move(id), .src_blocks = std::move(src),
            .num_tokens = tokens, .first_token_id = 9, .first_logprob = -0.5f,
            .deadline = absl::Now() + absl::Seconds(10)};
  }

  HostCache src_{1}, dst_{2};
  std::unique_ptr<TcpKvReceiver> receiver_;
};

TEST_F(TcpKvTransferTest, ReceivedBytesEqualSentBytes) {
  // Tiny chunks so a transfer spans many frames.
  TcpKvSender sender(src_.view, {.identity = Identity("prefill-0", 5), .max_chunk_bytes = 300});
  std::vector<int32_t> src = {5, 17, 2, 30, 11}, dst = {8, 1, 31, 4, 20};
  receiver_->Expect("r1", dst, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(WaitForSend(sender, sender.StartSend(Request("r1", src, 18))).ok());
  std::vector<KvArrival> arrivals = WaitForArrivals(*receiver_, 1);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_TRUE(arrivals[0].status.ok()) << arrivals[0].status;
  EXPECT_EQ(arrivals[0].num_tokens, 18);
  EXPECT_EQ(arrivals[0].first_token_id, 9);
  EXPECT_FLOAT_EQ(arrivals[0].first_logprob, -0.5f);
  for (size_t i = 0; i < src.size(); ++i) EXPECT_TRUE(dst_.BlockEquals(src_, dst[i], src[i])) << i;
}

TEST_F(TcpKvTransferTest, ManyTransfersReuseOneConnection) {
  TcpKvSender sender(src_.view, {.identity = Identity("prefill-0", 5)});
  std::vector<uint64_t> ids;
  for (int r = 0; r < 8; ++r) {
    std::vector<int32_t> src = {r, r + 8}, dst = {31 - r, 16 + r};
    receiver_->Expect("r" + std::to_string(r), dst, absl::Now() + absl::Seconds(10));
    ids.push_back(sender.StartSend(Request("r" + std::to_string(r), src, 5)));
  }
  for (uint64_t id : ids) EXPECT_TRUE(WaitForSend(sender, id).ok());
  EXPECT_EQ(WaitForArrivals(*receiver_, 8).size(), 8u);
  for (int r = 0; r < 8; ++r) EXPECT_TRUE(dst_.BlockEquals(src_, 16 + r, r + 8));
}

TEST_F(TcpKvTransferTest, HandshakeRefusesLayoutMismatchAndStaleIncarnation) {
  TcpKvSender other_model(src_.view, {.identity = Identity("p", 5, "other-model")});
  receiver_->Expect("r1", {0}, absl::Now() + absl::Seconds(10));
  absl::Status s = WaitForSend(other_model, other_model.StartSend(Request("r1", {0}, 1)));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("kv_layout mismatch"));

  TcpKvSender sender(src_.view, {.identity = Identity("p", 5)});
  KvSendRequest stale = Request("r1", {0}, 1);
  stale.receiver_incarnation = 76;  // the receiver restarted since the reservation
  s = WaitForSend(sender, sender.StartSend(stale));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("incarnation"));
}

TEST_F(TcpKvTransferTest, LeaseExpiresWithoutKv) {
  receiver_->Expect("r1", {3}, absl::Now() + absl::Milliseconds(20));
  std::vector<KvArrival> arrivals = WaitForArrivals(*receiver_, 1);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].status.code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(TcpKvTransferTest, CancelledReservationIsNeverWritten) {
  HostCache before(2);
  TcpKvSender sender(src_.view, {.identity = Identity("p", 5)});
  receiver_->Expect("r1", {6, 7}, absl::Now() + absl::Seconds(10));
  receiver_->Cancel("r1");
  EXPECT_TRUE(WaitForSend(sender, sender.StartSend(Request("r1", {1, 2}, 8))).ok());
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(receiver_->PollArrivals().empty());
  EXPECT_TRUE(dst_.BlockEquals(before, 6, 6));
  EXPECT_TRUE(dst_.BlockEquals(before, 7, 7));
}

TEST_F(TcpKvTransferTest, IncompleteTransferIsDataLoss) {
  TcpKvSender sender(src_.view, {.identity = Identity("p", 5)});
  receiver_->Expect("r1", {6, 7}, absl::Now() + absl::Seconds(10));
  // Claims 8 tokens (2 blocks) but sends one block.
  EXPECT_TRUE(WaitForSend(sender, sender.StartSend(Request("r1", {1}, 8))).ok());
  std::vector<KvArrival> arrivals = WaitForArrivals(*receiver_, 1);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].status.code(), absl::StatusCode::kDataLoss);
}

TEST_F(TcpKvTransferTest, DeadReceiverIsUnavailable) {
  std::string endpoint = receiver_->endpoint();
  receiver_.reset();
  TcpKvSender sender(src_.view, {.identity = Identity("p", 5)});
  KvSendRequest request{.endpoint = endpoint, .receiver_incarnation = 77,
                        .reservation_id = "r1", .src_blocks = {1}, .num_tokens = 1,
                        .deadline = absl::Now() + absl::Seconds(2)};
  absl::Status s = WaitForSend(sender, sender.StartSend(request));
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) << s;
}

TEST_F(TcpKvTransferTest, GarbageOnTheSocketIsDroppedAndReceiverKeepsWorking) {
  for (std::string garbage : {std::string("\xff\xff\xff\xff", 4), std::string("\x05\0\0\0hello", 9),
                              std::string(3, 'x')}) {
    auto socket = tcp::Connect(receiver_->endpoint(), absl::Now() + absl::Seconds(2));
    ASSERT_TRUE(socket.ok());
    ::send(socket->fd(), garbage.data(), garbage.size(), MSG_NOSIGNAL);
  }
  TcpKvSender sender(src_.view, {.identity = Identity("p", 5)});
  receiver_->Expect("r1", {9}, absl::Now() + absl::Seconds(10));
  EXPECT_TRUE(WaitForSend(sender, sender.StartSend(Request("r1", {3}, 2))).ok());
  EXPECT_EQ(WaitForArrivals(*receiver_, 1).size(), 1u);
  EXPECT_TRUE(dst_.BlockEquals(src_, 9, 3));
}

// Overlap over TCP (host KV): each layer goes once the pass published it, the first token
// once supplied; what arrives is what the pass wrote, not what the blocks held before.
TEST_F(TcpKvTransferTest, StreamsLayersAsPublishedAndWaitsForTheFirstToken) {
  TcpKvSender sender(src_.view, {.identity = Identity("prefill-0", 5), .max_chunk_bytes = 300});
  std::vector<int32_t> src = {3, 9, 27}, dst = {12, 0, 7};
  receiver_->Expect("s", dst, absl::Now() + absl::Seconds(10));
  auto progress = std::make_shared<KvLayerProgress>(src_.view.layout.num_layers);
  KvSendRequest request = Request("s", src, 11);
  request.progress = progress;
  request.first_token_pending = true;
  const uint64_t id = sender.StartSend(std::move(request));
  const size_t bb = src_.view.layout.BytesPerBlockPerLayer();
  for (int64_t l = 0; l < src_.view.layout.num_layers; ++l) {
    absl::SleepFor(absl::Milliseconds(20));
    EXPECT_TRUE(receiver_->PollArrivals().empty());
    for (int32_t b : src) {  // the "forward pass" writes this layer now
      std::memset(src_.view.KBlock(l, b), static_cast<int>(l + b), bb);
      std::memset(src_.view.VBlock(l, b), static_cast<int>(l + 2 * b), bb);
    }
    progress->LayerWritten(l, nullptr);
  }
  progress->Complete();
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(sender.Poll(id).has_value());  // waiting for the first token
  sender.SetFirstToken(id, {.token_id = 42, .logprob = -1.5f, .cached_prompt_tokens = 16});
  ASSERT_TRUE(WaitForSend(sender, id).ok());
  std::vector<KvArrival> arrivals = WaitForArrivals(*receiver_, 1);
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_TRUE(arrivals[0].status.ok()) << arrivals[0].status;
  EXPECT_EQ(arrivals[0].first_token_id, 42);
  EXPECT_FLOAT_EQ(arrivals[0].first_logprob, -1.5f);
  EXPECT_EQ(arrivals[0].cached_prompt_tokens, 16);
  for (size_t i = 0; i < src.size(); ++i) EXPECT_TRUE(dst_.BlockEquals(src_, dst[i], src[i])) << i;

  // Cancelled before its first token: CANCELLED, the reservation is not reported done.
  receiver_->Expect("c", {1}, absl::Now() + absl::Seconds(10));
  KvSendRequest pending = Request("c", {4}, 5);
  pending.first_token_pending = true;
  const uint64_t cancelled = sender.StartSend(std::move(pending));
  absl::SleepFor(absl::Milliseconds(50));
  sender.Cancel(cancelled);
  EXPECT_TRUE(absl::IsCancelled(WaitForSend(sender, cancelled)));
  for (const KvArrival& a : receiver_->PollArrivals()) EXPECT_FALSE(a.status.ok());
}

// The sender's job bookkeeping: a first token supplied late, a cancel or the deadline ends
// the wait for it; WaitForFinish never misses a Finish between two calls.
TEST(KvSendQueueTest, FirstTokensCancelsDeadlinesAndFinishWakeups) {
  KvSendQueue jobs;
  const uint64_t a = jobs.Push({.reservation_id = "a"});
  const uint64_t b = jobs.Push({.reservation_id = "b"});
  const uint64_t c = jobs.Push({.reservation_id = "c"});
  std::thread supplier([&] {
    absl::SleepFor(absl::Milliseconds(20));
    jobs.SetFirstToken(a, {.token_id = 7, .logprob = -0.5f, .cached_prompt_tokens = 3});
    jobs.Cancel(b);
  });
  absl::StatusOr<KvFirstToken> first = jobs.WaitFirstToken(a, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->token_id, 7);
  EXPECT_EQ(first->cached_prompt_tokens, 3);
  EXPECT_TRUE(absl::IsCancelled(jobs.WaitFirstToken(b, absl::Now() + absl::Seconds(10)).status()));
  supplier.join();
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      jobs.WaitFirstToken(c, absl::Now() + absl::Milliseconds(10)).status()));
  jobs.SetFirstToken(999, {});  // unknown id: ignored

  // A Finish before the wait is seen at once; later a Finish wakes a waiting watcher.
  jobs.Finish(a, absl::OkStatus());
  absl::Time start = absl::Now();
  jobs.WaitForFinish(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  std::thread finisher([&] {
    absl::SleepFor(absl::Milliseconds(20));
    jobs.Finish(b, absl::CancelledError("cancelled"));
  });
  start = absl::Now();
  jobs.WaitForFinish(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  finisher.join();
  EXPECT_TRUE(jobs.Poll(a)->ok());
  EXPECT_TRUE(absl::IsCancelled(*jobs.Poll(b)));
  EXPECT_FALSE(jobs.Poll(a).has_value());  // reported once
  jobs.SetFirstToken(a, {});  // finished: ignored
}

TEST(LoopbackKvTransferTest, CopiesBlocksAndReportsArrival) {
  HostCache src(3), dst(4);
  LoopbackKvNetwork network;
  LoopbackKvReceiver receiver(dst.view, network);
  LoopbackKvSender sender(src.view, network);
  receiver.Expect("r", {10, 2}, absl::Now() + absl::Seconds(10));
  uint64_t id = sender.StartSend({.endpoint = receiver.endpoint(), .reservation_id = "r",
                                  .src_blocks = {0, 1}, .num_tokens = 7, .first_token_id = 3,
                                  .deadline = absl::Now() + absl::Seconds(10)});
  ASSERT_TRUE(sender.Poll(id).value().ok());
  std::vector<KvArrival> arrivals = receiver.PollArrivals();
  ASSERT_EQ(arrivals.size(), 1u);
  EXPECT_EQ(arrivals[0].first_token_id, 3);
  EXPECT_TRUE(dst.BlockEquals(src, 10, 0));
  EXPECT_TRUE(dst.BlockEquals(src, 2, 1));
  EXPECT_TRUE(absl::IsUnavailable(
      *sender.Poll(sender.StartSend({.endpoint = "loopback:999", .reservation_id = "x"}))));
}

}  // namespace
}  // namespace tandem
