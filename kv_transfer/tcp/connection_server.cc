#include "kv_transfer/tcp/connection_server.h"

namespace tandem::tcp {

ConnectionServer::ConnectionServer(Socket listener, Serve serve)
    : listener_(std::move(listener)),
      serve_(std::move(serve)),
      accept_thread_([this] { AcceptLoop(); }) {}

ConnectionServer::~ConnectionServer() {
  stopping_ = true;
  accept_thread_.join();
  Reap(/*all=*/true);
}

void ConnectionServer::Reap(bool all) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = connections_.begin(); it != connections_.end();) {
    Connection& c = **it;
    if (!all && !c.done) {
      ++it;
      continue;
    }
    c.socket->Shutdown();  // wakes a reader blocked in poll
    c.thread.join();
    it = connections_.erase(it);
  }
}

void ConnectionServer::AcceptLoop() {
  while (!stopping_) {
    absl::StatusOr<Socket> socket = Accept(listener_, absl::Milliseconds(200));
    Reap(/*all=*/false);
    if (!socket.ok()) continue;  // timeout slice, or a transient accept error
    auto connection = std::make_unique<Connection>();
    connection->socket = std::make_shared<Socket>(*std::move(socket));
    Connection* c = connection.get();
    c->thread = std::thread([this, c] {
      serve_(*c->socket);
      c->done = true;
    });
    std::lock_guard<std::mutex> lock(mu_);
    connections_.push_back(std::move(connection));
  }
}

}  // namespace tandem::tcp
