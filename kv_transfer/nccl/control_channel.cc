#include "kv_transfer/nccl/control_channel.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::nccl_control {
namespace {

constexpr size_t kMaxFrameBytes = 64u << 10;
enum Type : uint8_t {
  kHello = 1, kHelloAck = 2, kTransferHeader = 3, kTransferTrailer = 4, kChunkLanded = 5,
  kSlotFree = 6
};

class Writer {
 public:
  explicit Writer(Type type) { bytes_.push_back(static_cast<char>(type)); }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void I32(int32_t v) { U64(static_cast<uint64_t>(static_cast<uint32_t>(v))); }
  void F32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    U64(bits);
  }
  void Str(const std::string& s) {
    U64(s.size());
    bytes_ += s;
  }
  void Raw(const void* p, size_t n) { bytes_.append(static_cast<const char*>(p), n); }
  absl::Status Send(const tcp::Socket& socket, absl::Time deadline) {
    uint32_t size = static_cast<uint32_t>(bytes_.size());
    char prefix[4] = {static_cast<char>(size), static_cast<char>(size >> 8),
                      static_cast<char>(size >> 16), static_cast<char>(size >> 24)};
    TANDEM_RETURN_IF_ERROR(tcp::SendAll(socket, prefix, 4, deadline));
    return tcp::SendAll(socket, bytes_.data(), bytes_.size(), deadline);
  }

 private:
  std::string bytes_;
};

class Reader {
 public:
  explicit Reader(std::string bytes) : bytes_(std::move(bytes)) {}
  bool U64(uint64_t& v) {
    if (pos_ + 8 > bytes_.size()) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<uint8_t>(bytes_[pos_ + i])} << (8 * i);
    pos_ += 8;
    return true;
  }
  bool I32(int32_t& v) {
    uint64_t u;
    if (!U64(u)) return false;
    v = static_cast<int32_t>(static_cast<uint32_t>(u));
    return true;
  }
  bool F32(float& v) {
    uint64_t u;
    if (!U64(u)) return false;
    uint32_t bits = static_cast<uint32_t>(u);
    std::memcpy(&v, &bits, 4);
    return true;
  }
  bool Str(std::string& s) {
    uint64_t n;
    if (!U64(n) || n > bytes_.size() - pos_) return false;
    s = bytes_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool Raw(void* p, size_t n) {
    if (pos_ + n > bytes_.size()) return false;
    std::memcpy(p, bytes_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool Done() const { return pos_ == bytes_.size(); }

 private:
  std::string bytes_;
  size_t pos_ = 1;  // past the type byte
};

absl::StatusOr<Reader> ReadFrame(const tcp::Socket& socket, Type type, absl::Time deadline) {
  unsigned char prefix[4];
  TANDEM_RETURN_IF_ERROR(tcp::RecvAll(socket, reinterpret_cast<char*>(prefix), 4, deadline));
  uint32_t size = prefix[0] | (prefix[1] << 8) | (prefix[2] << 16) | (uint32_t{prefix[3]} << 24);
  if (size == 0 || size > kMaxFrameBytes) {
    return absl::DataLossError(absl::StrCat("control frame of ", size, " bytes"));
  }
  std::string bytes(size, '\0');
  TANDEM_RETURN_IF_ERROR(tcp::RecvAll(socket, bytes.data(), size, deadline));
  if (static_cast<uint8_t>(bytes[0]) != type) {
    return absl::DataLossError(absl::StrCat("control frame of type ", static_cast<int>(bytes[0]),
                                            ", expected ", static_cast<int>(type)));
  }
  return Reader(std::move(bytes));
}

absl::Status Malformed(const char* what) {
  return absl::DataLossError(absl::StrCat("malformed ", what, " frame"));
}

}  // namespace

absl::Status Write(const tcp::Socket& socket, const Hello& hello, absl::Time deadline) {
  Writer w(kHello);
  w.Str(hello.sender_name);
  w.U64(hello.sender_incarnation);
  w.U64(hello.expected_receiver_incarnation);
  w.Str(hello.model_fingerprint);
  w.Str(hello.layout);
  w.Raw(&hello.unique_id, sizeof(hello.unique_id));
  w.U64(hello.blocking_data_communicator ? 1 : 0);
  w.Str(hello.gpu_uuid);
  w.U64(hello.register_staging ? 1 : 0);
  w.U64(hello.direct_write ? 1 : 0);
  w.U64(hello.sender_staging_bytes);
  return w.Send(socket, deadline);
}

absl::Status Write(const tcp::Socket& socket, const HelloAck& ack, absl::Time deadline) {
  Writer w(kHelloAck);
  w.U64(ack.accepted ? 1 : 0);
  w.Str(ack.error);
  w.U64(ack.receiver_incarnation);
  w.U64(ack.max_chunk_bytes);
  w.U64(ack.staging_bytes);
  return w.Send(socket, deadline);
}

namespace {
absl::Status WriteNotice(Type type, const tcp::Socket& socket, const ChunkNotice& notice,
                         absl::Time deadline) {
  Writer w(type);
  w.U64(notice.sequence);
  w.U64(static_cast<uint64_t>(notice.chunk));
  return w.Send(socket, deadline);
}

absl::StatusOr<ChunkNotice> ReadNotice(Type type, const tcp::Socket& socket,
                                       absl::Time deadline) {
  TANDEM_ASSIGN_OR_RETURN(Reader r, ReadFrame(socket, type, deadline));
  ChunkNotice n;
  uint64_t chunk = 0;
  if (!r.U64(n.sequence) || !r.U64(chunk) || !r.Done()) return Malformed("chunk notice");
  n.chunk = static_cast<int64_t>(chunk);
  return n;
}
}  // namespace

absl::Status WriteChunkLanded(const tcp::Socket& socket, const ChunkNotice& notice,
                              absl::Time deadline) {
  return WriteNotice(kChunkLanded, socket, notice, deadline);
}

absl::Status WriteSlotFree(const tcp::Socket& socket, const ChunkNotice& notice,
                           absl::Time deadline) {
  return WriteNotice(kSlotFree, socket, notice, deadline);
}

absl::StatusOr<ChunkNotice> ReadChunkLanded(const tcp::Socket& socket, absl::Time deadline) {
  return ReadNotice(kChunkLanded, socket, deadline);
}

absl::StatusOr<ChunkNotice> ReadSlotFree(const tcp::Socket& socket, absl::Time deadline) {
  return ReadNotice(kSlotFree, socket, deadline);
}

absl::Status Write(const tcp::Socket& socket, const TransferHeader& header, absl::Time deadline) {
  Writer w(kTransferHeader);
  w.U64(header.sequence);
  w.Str(header.reservation_id);
  w.I32(header.num_blocks);
  w.I32(header.units_per_chunk);
  w.I32(header.edge_units);
  w.I32(header.ramp);
  w.I32(header.num_tokens);
  return w.Send(socket, deadline);
}

absl::Status Write(const tcp::Socket& socket, const TransferTrailer& trailer,
                   absl::Time deadline) {
  Writer w(kTransferTrailer);
  w.U64(trailer.sequence);
  w.I32(trailer.code);
  w.Str(trailer.message);
  w.I32(trailer.first_token_id);
  w.F32(trailer.first_logprob);
  w.I32(trailer.cached_prompt_tokens);
  return w.Send(socket, deadline);
}

absl::StatusOr<Hello> ReadHello(const tcp::Socket& socket, absl::Time deadline) {
  TANDEM_ASSIGN_OR_RETURN(Reader r, ReadFrame(socket, kHello, deadline));
  Hello h;
  uint64_t blocking = 0, registered = 0, direct = 0;
  if (!r.Str(h.sender_name) || !r.U64(h.sender_incarnation) ||
      !r.U64(h.expected_receiver_incarnation) || !r.Str(h.model_fingerprint) ||
      !r.Str(h.layout) || !r.Raw(&h.unique_id, sizeof(h.unique_id)) || !r.U64(blocking) ||
      !r.Str(h.gpu_uuid) || !r.U64(registered) || !r.U64(direct) ||
      !r.U64(h.sender_staging_bytes) || !r.Done()) {
    return Malformed("hello");
  }
  h.blocking_data_communicator = blocking == 1;
  h.register_staging = registered == 1;
  h.direct_write = direct == 1;
  return h;
}

absl::StatusOr<HelloAck> ReadHelloAck(const tcp::Socket& socket, absl::Time deadline) {
  TANDEM_ASSIGN_OR_RETURN(Reader r, ReadFrame(socket, kHelloAck, deadline));
  HelloAck a;
  uint64_t accepted;
  if (!r.U64(accepted) || !r.Str(a.error) || !r.U64(a.receiver_incarnation) ||
      !r.U64(a.max_chunk_bytes) || !r.U64(a.staging_bytes) || !r.Done()) {
    return Malformed("hello ack");
  }
  a.accepted = accepted == 1;
  return a;
}

absl::StatusOr<TransferHeader> ReadTransferHeader(const tcp::Socket& socket, absl::Time deadline) {
  TANDEM_ASSIGN_OR_RETURN(Reader r, ReadFrame(socket, kTransferHeader, deadline));
  TransferHeader h;
  if (!r.U64(h.sequence) || !r.Str(h.reservation_id) || !r.I32(h.num_blocks) ||
      !r.I32(h.units_per_chunk) || !r.I32(h.edge_units) || !r.I32(h.ramp) ||
      !r.I32(h.num_tokens) ||
      !r.Done()) {
    return Malformed("transfer header");
  }
  return h;
}

absl::StatusOr<TransferTrailer> ReadTransferTrailer(const tcp::Socket& socket,
                                                    absl::Time deadline) {
  TANDEM_ASSIGN_OR_RETURN(Reader r, ReadFrame(socket, kTransferTrailer, deadline));
  TransferTrailer t;
  if (!r.U64(t.sequence) || !r.I32(t.code) || !r.Str(t.message) || !r.I32(t.first_token_id) ||
      !r.F32(t.first_logprob) || !r.I32(t.cached_prompt_tokens) || !r.Done()) {
    return Malformed("transfer trailer");
  }
  return t;
}

bool PeerClosed(const tcp::Socket& socket) {
  pollfd p{.fd = socket.fd(), .events = POLLIN | POLLRDHUP, .revents = 0};
  int n = ::poll(&p, 1, /*timeout_ms=*/0);
  if (n == 0) return false;
  if (n < 0) return true;
  if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return true;
  char byte;
  ssize_t got = ::recv(socket.fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

}  // namespace tandem::nccl_control
