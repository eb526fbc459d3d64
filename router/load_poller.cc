#include "router/load_poller.h"

#include <memory>
#include <vector>

#include "common/logging.h"

namespace tandem::router {
namespace {

WorkerRole RoleFromProto(internal_v1::Role role, WorkerRole hint) {
  switch (role) {
    case internal_v1::ROLE_PREFILL:
      return WorkerRole::kPrefill;
    case internal_v1::ROLE_DECODE:
      return WorkerRole::kDecode;
    case internal_v1::ROLE_COLOCATED:
      return WorkerRole::kColocated;
    default:
      return hint;
  }
}

}  // namespace

WorkerView ViewFromReport(const internal_v1::LoadReport& r, const std::string& address,
                          WorkerRole role_hint) {
  WorkerView v;
  v.name = r.worker().name().empty() ? address : r.worker().name();
  v.grpc_address = address;
  v.incarnation = r.worker().incarnation();
  v.role = RoleFromProto(r.worker().role(), role_hint);
  v.num_blocks_free = r.num_blocks_free();
  v.num_blocks_total = r.num_blocks_total();
  v.num_running = r.num_running();
  v.num_waiting = r.num_waiting();
  v.cached_block_hashes.insert(r.cached_block_hashes().begin(), r.cached_block_hashes().end());
  return v;
}

LoadPoller::LoadPoller(LoadPollerOptions options, WorkerRegistry* registry,
                       WorkerClients* clients, RestartListener on_restart,
                       HealthListener on_health)
    : options_(options),
      registry_(registry),
      clients_(clients),
      on_restart_(std::move(on_restart)),
      on_health_(std::move(on_health)) {}

LoadPoller::~LoadPoller() { Stop(); }

void LoadPoller::AddTarget(const std::string& address, WorkerRole role_hint) {
  std::lock_guard<std::mutex> lock(mu_);
  targets_.try_emplace(address, Target{role_hint});
}

void LoadPoller::Start() { thread_ = std::thread([this] { Loop(); }); }

void LoadPoller::Stop() {
  std::unique_lock<std::mutex> lock(mu_);
  stop_ = true;
  cv_.notify_all();
  lock.unlock();
  if (thread_.joinable()) thread_.join();
  lock.lock();
  cv_.wait(lock, [this] { return outstanding_ == 0; });
}

void LoadPoller::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    Tick();
    lock.lock();
    cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.interval), [this] { return stop_; });
  }
}

void LoadPoller::Tick() {
  std::vector<std::pair<std::string, WorkerRole>> due;
  bool any_prefill_target = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [address, target] : targets_) {
      any_prefill_target = any_prefill_target || target.role_hint != WorkerRole::kDecode;
      if (target.in_flight) continue;  // a slow worker gets one poll at a time
      target.in_flight = true;
      ++outstanding_;
      due.emplace_back(address, target.role_hint);
    }
  }
  for (const auto& [address, hint] : due) Poll(address, hint);
  absl::Time now = absl::Now();
  // Without any prefill worker configured, decode workers run whole requests (colocated
  // path), so they alone make the router ready.
  bool prefill_ok = !any_prefill_target || !registry_->Candidates(WorkerRole::kPrefill, now).empty();
  bool serving = prefill_ok && !registry_->Candidates(WorkerRole::kDecode, now).empty();
  on_health_(serving);
}

void LoadPoller::Poll(const std::string& address, WorkerRole hint) {
  struct Call {
    grpc::ClientContext context;
    internal_v1::GetLoadRequest request;
    internal_v1::LoadReport report;
  };
  auto call = std::make_shared<Call>();
  call->context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  WorkerStubs& stubs = clients_->Get(address);
  auto done = [this, call, address](grpc::Status status) {
    OnPollDone(address, status, call->report);
  };
  // Prefill and decode workers both serve GetLoad; the stub only picks the method path.
  if (hint == WorkerRole::kPrefill) {
    stubs.prefill->async()->GetLoad(&call->context, &call->request, &call->report, done);
  } else {
    stubs.decode->async()->GetLoad(&call->context, &call->request, &call->report, done);
  }
}

void LoadPoller::OnPollDone(const std::string& address, const grpc::Status& status,
                            const internal_v1::LoadReport& report) {
  std::string known_name;
  WorkerRole hint;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Target& target = targets_[address];
    target.in_flight = false;
    known_name = target.name;
    hint = target.role_hint;
  }
  if (status.ok()) {
    OnReport(report, address, hint);
  } else if (!known_name.empty()) {
    registry_->RecordFailure(known_name, absl::Now());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (--outstanding_ == 0) cv_.notify_all();
}

void LoadPoller::OnReport(const internal_v1::LoadReport& report, const std::string& address,
                          WorkerRole hint) {
  WorkerView view = ViewFromReport(report, address, hint);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = targets_.try_emplace(address, Target{hint});
    it->second.name = view.name;
  }
  if (report.draining()) {
    registry_->Remove(view.name);
    return;
  }
  if (registry_->Upsert(view, absl::Now())) {
    TANDEM_LOG(INFO) << "event=worker_restarted worker=" << view.name << " address=" << address
                     << " incarnation=" << view.incarnation;
    on_restart_(view.name);
  }
}

}  // namespace tandem::router
