#include "tests/integration/router_cluster.h"

#include <csignal>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/generic/generic_stub.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {

using internal::v1::GetLoadRequest;
using internal::v1::LoadReport;

absl::StatusOr<WorkerProcess> RouterCluster::StartOne(bool prefill, int index,
                                                      const std::string& listen) {
  std::vector<std::string> flags = options_.worker_flags;
  const std::vector<std::string>& role = prefill ? options_.prefill_flags : options_.decode_flags;
  flags.insert(flags.end(), role.begin(), role.end());
  flags.push_back("--listen=" + listen);
  std::string name = absl::StrCat(prefill ? "prefill-" : "decode-", index);
  return StartWorker(prefill ? TANDEM_PREFILL_BINARY : TANDEM_DECODE_BINARY, options_.model,
                     name, flags);
}

absl::StatusOr<std::unique_ptr<RouterCluster>> RouterCluster::Start(RouterClusterOptions o) {
  auto c = std::unique_ptr<RouterCluster>(new RouterCluster());
  c->options_ = o;
  if (o.workers_register) {
    if (absl::Status s = c->StartRouter(); !s.ok()) return s;
    c->options_.worker_flags.push_back("--router=" + c->router_address_);
    if (absl::Status s = c->StartWorkers(); !s.ok()) return s;
    if (absl::Status s = c->WaitServing(); !s.ok()) return s;
  } else {
    if (absl::Status s = c->StartWorkers(); !s.ok()) return s;
    if (absl::Status s = c->StartRouter(); !s.ok()) return s;
  }
  c->stub_ = tandem::v1::Tandem::NewStub(
      grpc::CreateChannel(c->router_address_, grpc::InsecureChannelCredentials()));
  return c;
}

absl::Status RouterCluster::StartWorkers() {
  for (int i = 0; i < options_.num_decode; ++i) {
    auto w = StartOne(false, i, "127.0.0.1:0");
    if (!w.ok()) return w.status();
    decode_.push_back(*std::move(w));
  }
  for (int i = 0; i < options_.num_prefill; ++i) {
    auto w = StartOne(true, i, "127.0.0.1:0");
    if (!w.ok()) return w.status();
    prefill_.push_back(*std::move(w));
  }
  return absl::OkStatus();
}

absl::Status RouterCluster::StartRouter() {
  std::vector<std::string> prefill, decode;
  for (const WorkerProcess& w : prefill_) prefill.push_back(w.grpc_address);
  for (const WorkerProcess& w : decode_) decode.push_back(w.grpc_address);
  std::string dir = MakeTempDir("router");
  std::vector<std::string> argv = {ServerBinary(TANDEM_ROUTER_BINARY),
                                   "--model=" + FixturePath("models/" + options_.model),
                                   "--listen=127.0.0.1:0", "--ready_file=" + dir + "/ready.json",
                                   "--prefill=" + absl::StrJoin(prefill, ","),
                                   "--decode=" + absl::StrJoin(decode, ",")};
  argv.insert(argv.end(), options_.router_flags.begin(), options_.router_flags.end());
  auto router = ChildProcess::Start(argv, dir + "/log.txt");
  if (!router.ok()) return router.status();
  router_ = *std::move(router);
  auto ready = WaitForReadyFile(dir + "/ready.json", *router_, absl::Seconds(30));
  if (!ready.ok()) return ready.status();
  router_address_ = (*ready)["grpc"].get<std::string>();
  return absl::OkStatus();
}

absl::Status RouterCluster::RestartDecode(int i) {
  WorkerProcess& w = decode_[static_cast<size_t>(i)];
  w.process->Signal(SIGKILL);
  (void)w.process->Wait(absl::Seconds(10));
  auto fresh = StartOne(false, i, w.grpc_address);
  if (!fresh.ok()) return fresh.status();
  w = *std::move(fresh);
  return absl::OkStatus();
}

absl::Status RouterCluster::RestartPrefill(int i) {
  WorkerProcess& w = prefill_[static_cast<size_t>(i)];
  w.process->Signal(SIGKILL);
  (void)w.process->Wait(absl::Seconds(10));
  auto fresh = StartOne(true, i, w.grpc_address);
  if (!fresh.ok()) return fresh.status();
  w = *std::move(fresh);
  return absl::OkStatus();
}

namespace {

// nullopt when the worker is not running; otherwise its report (or an error).
absl::StatusOr<LoadReport> GetLoad(const WorkerProcess& w, bool prefill) {
  auto channel = grpc::CreateChannel(w.grpc_address, grpc::InsecureChannelCredentials());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  LoadReport report;
  grpc::Status s = prefill ? internal::v1::PrefillWorker::NewStub(channel)->GetLoad(
                                 &context, GetLoadRequest(), &report)
                           : internal::v1::DecodeWorker::NewStub(channel)->GetLoad(
                                 &context, GetLoadRequest(), &report);
  if (!s.ok()) return absl::UnavailableError(s.error_message());
  return report;
}

}  // namespace

absl::Status RouterCluster::WaitAllBlocksFree(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  std::string last;
  while (absl::Now() < deadline) {
    bool all_free = true;
    last.clear();
    for (bool is_prefill : {true, false}) {
      for (WorkerProcess& w : is_prefill ? prefill_ : decode_) {
        if (!w.process->Running()) continue;
        auto r = GetLoad(w, is_prefill);
        bool free = r.ok() && r->num_blocks_total() > 0 &&
                    r->num_blocks_free() == r->num_blocks_total() && r->num_running() == 0 &&
                    r->num_waiting() == 0;
        all_free = all_free && free;
        absl::StrAppend(&last, r.ok() ? r->ShortDebugString() : r.status().ToString(), " | ");
      }
    }
    if (all_free) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("blocks still held: ", last));
}

namespace {

// grpc.health.v1.Health/Check by hand (no generated health stubs on Debian): the request is
// field 1 (service name), the response's field 1 is the status enum, SERVING = 1.
bool CheckServing(grpc::GenericStub& stub, const std::string& service) {
  std::string request = std::string("\x0a") + static_cast<char>(service.size()) + service;
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request_buffer, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  bool got = cq.Next(&tag, &ok);
  cq.Shutdown();
  bool drained_ok = false;
  while (cq.Next(&tag, &drained_ok)) {
  }
  if (!got || !ok || !status.ok()) return false;
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return false;
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes == std::string("\x08\x01");
}

}  // namespace

absl::Status RouterCluster::WaitServing(absl::Duration timeout) {
  grpc::GenericStub stub(grpc::CreateChannel(router_address_, grpc::InsecureChannelCredentials()));
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (CheckServing(stub, "tandem.v1.Tandem")) return absl::OkStatus();
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("router never became SERVING");
}

StreamOutput RouterCluster::Stream(const tandem::v1::GenerateRequest& request,
                                   absl::Duration timeout,
                                   const std::function<void(int)>& on_token) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  auto reader = stub_->GenerateStream(&context, request);
  StreamOutput out;
  tandem::v1::GenerateStreamResponse event;
  while (reader->Read(&event)) {
    if (event.has_delta() && event.delta().index() == 0) {
      out.tokens.insert(out.tokens.end(), event.delta().token_ids().begin(),
                        event.delta().token_ids().end());
      out.text += event.delta().text();
      if (on_token) on_token(static_cast<int>(out.tokens.size()));
    }
    if (event.has_finished()) {
      ++out.num_finished;
      out.finished = event.finished();
    }
    if (event.has_error()) ++out.num_errors;
  }
  out.status = reader->Finish();
  return out;
}

tandem::v1::GenerateRequest GreedyRequest(const std::vector<int32_t>& prompt,
                                          int32_t max_tokens) {
  tandem::v1::GenerateRequest r;
  r.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_ignore_eos(true);
  return r;
}

}  // namespace tandem::testing
