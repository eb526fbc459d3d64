#include "kv_transfer/tcp/socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tandem::tcp {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitReady(int fd, short events, absl::Time deadline) {
  while (true) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("socket deadline passed");
    pollfd p{.fd = fd, .events = events, .revents = 0};
    int timeout_ms = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000));
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) return Errno("poll");
  }
}

absl::StatusOr<std::pair<std::string, int>> SplitEndpoint(const std::string& endpoint) {
  size_t colon = endpoint.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(endpoint.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("kv endpoint must be host:port, got \"",
                                                   endpoint, "\""));
  }
  return std::make_pair(endpoint.substr(0, colon), port);
}

}  // namespace

absl::Status SendAll(const Socket& socket, const char* data, size_t size, absl::Time deadline) {
  const int fd = socket.fd();
  while (size > 0) {
    TANDEM_RETURN_IF_ERROR(WaitReady(fd, POLLOUT, deadline));
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return Errno("send");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status RecvAll(const Socket& socket, char* data, size_t size, absl::Time deadline) {
  const int fd = socket.fd();
  while (size > 0) {
    TANDEM_RETURN_IF_ERROR(WaitReady(fd, POLLIN, deadline));
    ssize_t n = ::recv(fd, data, size, MSG_DONTWAIT);
    if (n == 0) return absl::UnavailableError("peer closed the connection");
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return Errno("recv");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

Socket& Socket::operator=(Socket&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.Release();
  }
  return *this;
}

int Socket::Release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void Socket::Shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

absl::StatusOr<std::pair<Socket, int>> Listen(const std::string& host, int port) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return Errno("socket");
  int one = 1;
  ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("listen host must be an IPv4 address, got ",
                                                   host));
  }
  if (::bind(s.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno(absl::StrCat("bind ", host, ":", port));
  }
  if (::listen(s.fd(), 64) != 0) return Errno("listen");
  socklen_t len = sizeof(addr);
  ::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&addr), &len);
  return std::make_pair(std::move(s), static_cast<int>(ntohs(addr.sin_port)));
}

absl::StatusOr<Socket> Accept(const Socket& listener, absl::Duration timeout) {
  TANDEM_RETURN_IF_ERROR(WaitReady(listener.fd(), POLLIN, absl::Now() + timeout));
  Socket s(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!s.valid()) return Errno("accept");
  int one = 1;
  ::setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return s;
}

absl::StatusOr<Socket> Connect(const std::string& endpoint, absl::Time deadline) {
  TANDEM_ASSIGN_OR_RETURN(auto host_port, SplitEndpoint(endpoint));
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  std::string port = std::to_string(host_port.second);
  if (::getaddrinfo(host_port.first.c_str(), port.c_str(), &hints, &result) != 0 || !result) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", endpoint));
  }
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  int rc = ::connect(s.fd(), result->ai_addr, result->ai_addrlen);
  ::freeaddrinfo(result);
  if (rc != 0 && errno != EINPROGRESS) return Errno(absl::StrCat("connect ", endpoint));
  TANDEM_RETURN_IF_ERROR(WaitReady(s.fd(), POLLOUT, deadline));
  int err = 0;
  socklen_t len = sizeof(err);
  ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    return absl::UnavailableError(absl::StrCat("connect ", endpoint, ": ", std::strerror(err)));
  }
  int one = 1;
  ::setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return s;
}

absl::Status WaitReadable(const Socket& socket, absl::Duration timeout) {
  return WaitReady(socket.fd(), POLLIN, absl::Now() + timeout);
}

bool IdleConnectionBroken(const Socket& socket) {
  pollfd p{.fd = socket.fd(), .events = POLLIN | POLLRDHUP, .revents = 0};
  int n = ::poll(&p, 1, /*timeout_ms=*/0);
  return n != 0;  // readable, hung up, errored, or poll itself failed
}

absl::Status WriteFrame(const Socket& socket, const internal::v1::KvFrame& frame,
                        absl::Time deadline) {
  std::string bytes;
  if (!frame.SerializeToString(&bytes) || bytes.size() > kMaxFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("kv frame of ", bytes.size(),
                                                   " bytes exceeds ", kMaxFrameBytes));
  }
  uint32_t size = static_cast<uint32_t>(bytes.size());
  char header[4] = {static_cast<char>(size), static_cast<char>(size >> 8),
                    static_cast<char>(size >> 16), static_cast<char>(size >> 24)};
  TANDEM_RETURN_IF_ERROR(SendAll(socket, header, 4, deadline));
  return SendAll(socket, bytes.data(), bytes.size(), deadline);
}

absl::StatusOr<internal::v1::KvFrame> ReadFrame(const Socket& socket, absl::Time deadline) {
  unsigned char header[4];
  TANDEM_RETURN_IF_ERROR(RecvAll(socket, reinterpret_cast<char*>(header), 4, deadline));
  uint32_t size = header[0] | (header[1] << 8) | (header[2] << 16) | (uint32_t{header[3]} << 24);
  if (size > kMaxFrameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("kv frame of ", size, " bytes exceeds ",
                                                   kMaxFrameBytes));
  }
  std::string bytes(size, '\0');
  TANDEM_RETURN_IF_ERROR(RecvAll(socket, bytes.data(), size, deadline));
  internal::v1::KvFrame frame;
  if (!frame.ParseFromString(bytes)) return absl::InvalidArgumentError("malformed kv frame");
  return frame;
}

}  // namespace tandem::tcp
