// Blocking TCP sockets with deadlines, and the KV data plane's framing: a 4-byte
// little-endian length, then a serialized tandem.internal.v1.KvFrame.
// Used only by the TCP transport's own I/O threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tandem/internal/v1/worker.pb.h"

namespace tandem::tcp {

// Frames larger than this are refused (a hostile or confused peer), both ways.
inline constexpr size_t kMaxFrameBytes = 64u << 20;

// An owned file descriptor, closed on destruction.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket();
  Socket(Socket&& other) noexcept : fd_(other.Release()) {}
  Socket& operator=(Socket&& other) noexcept;
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release();
  // Wakes up any thread blocked on this socket (shutdown both directions).
  void Shutdown();

 private:
  int fd_ = -1;
};

// Listens on host:port (port 0 picks a free one); returns the socket and the bound port.
absl::StatusOr<std::pair<Socket, int>> Listen(const std::string& host, int port);
// Accepts one connection, waiting at most `timeout`; DEADLINE_EXCEEDED when none came.
absl::StatusOr<Socket> Accept(const Socket& listener, absl::Duration timeout);
// Connects to "host:port" before `deadline`.
absl::StatusOr<Socket> Connect(const std::string& endpoint, absl::Time deadline);

// OK when `socket` has bytes to read (or was closed) within `timeout`; DEADLINE_EXCEEDED
// otherwise.
absl::Status WaitReadable(const Socket& socket, absl::Duration timeout);

// Writes or reads exactly `size` bytes before `deadline` (DEADLINE_EXCEEDED), UNAVAILABLE on
// a socket error or, reading, a peer that closed the connection. Any framing builds on these.
absl::Status SendAll(const Socket& socket, const char* data, size_t size, absl::Time deadline);
absl::Status RecvAll(const Socket& socket, char* data, size_t size, absl::Time deadline);

// Whether an idle connection is unusable without waiting: the peer closed it (a dead or
// restarted process), reset it, or sent bytes nobody asked for.
bool IdleConnectionBroken(const Socket& socket);

absl::Status WriteFrame(const Socket& socket, const internal::v1::KvFrame& frame,
                        absl::Time deadline);
// UNAVAILABLE when the peer closed the connection.
absl::StatusOr<internal::v1::KvFrame> ReadFrame(const Socket& socket, absl::Time deadline);

}  // namespace tandem::tcp
