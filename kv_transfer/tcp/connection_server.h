// Accepts connections on a listening socket and serves each on its own thread, until
// destroyed: then it stops accepting, shuts every connection down (waking its reader) and
// joins every thread. Finished connections are reaped while it runs. Shared by the KV
// receivers (TCP data plane, NCCL control channel).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kv_transfer/tcp/socket.h"

namespace tandem::tcp {

class ConnectionServer {
 public:
  // `serve` runs on the connection's thread and returns when the connection is done (or
  // its socket was shut down).
  using Serve = std::function<void(Socket& socket)>;

  ConnectionServer(Socket listener, Serve serve);
  ~ConnectionServer();
  ConnectionServer(const ConnectionServer&) = delete;
  ConnectionServer& operator=(const ConnectionServer&) = delete;

 private:
  struct Connection {
    std::shared_ptr<Socket> socket;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void AcceptLoop();
  void Reap(bool all);

  Socket listener_;
  Serve serve_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> connections_;  // guarded by mu_
  std::thread accept_thread_;  // last: starts after every other member exists
};

}  // namespace tandem::tcp
