#include "tests/integration/worker_pair.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "tests/testing/fixtures.h"

namespace tandem::testing {

using internal::v1::DecodeEvent;

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

std::string ServerBinary(const std::string& compiled) {
  const char* dir = std::getenv("TANDEM_BIN_DIR");
  if (dir == nullptr || *dir == '\0') return compiled;
  size_t slash = compiled.find_last_of('/');
  return std::string(dir) + "/" + (slash == std::string::npos ? compiled : compiled.substr(slash + 1));
}

absl::StatusOr<WorkerProcess> StartWorker(const std::string& binary, const std::string& model,
                                          const std::string& name,
                                          const std::vector<std::string>& extra_flags) {
  std::string dir = MakeTempDir(name);
  std::vector<std::string> argv = {ServerBinary(binary), "--model=" + FixturePath("models/" + model),
                                   "--threads=1", "--name=" + name,
                                   "--ready_file=" + dir + "/ready.json"};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  auto process = ChildProcess::Start(argv, dir + "/log.txt");
  if (!process.ok()) return process.status();
  auto ready = WaitForReadyFile(dir + "/ready.json", **process, absl::Seconds(30));
  if (!ready.ok()) return ready.status();
  return WorkerProcess{.process = *std::move(process),
                       .grpc_address = (*ready)["grpc"].get<std::string>(),
                       .kv_address = (*ready)["kv"].get<std::string>(),
                       .incarnation = (*ready)["incarnation"].get<uint64_t>()};
}

internal::v1::DecodeRequest GreedyDecodeRequest(const std::string& request_id,
                                                const std::vector<int32_t>& prompt,
                                                int32_t max_tokens) {
  internal::v1::DecodeRequest r;
  r.set_request_id(request_id);
  for (int32_t id : prompt) r.add_prompt_token_ids(id);
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_ignore_eos(true);
  r.set_seed(7);
  return r;
}

internal::v1::PrefillRequest PrefillFor(const std::string& request_id,
                                        const std::vector<int32_t>& prompt, int32_t max_tokens,
                                        const internal::v1::Reservation& reservation) {
  internal::v1::PrefillRequest r;
  r.set_request_id(request_id);
  for (int32_t id : prompt) r.add_token_ids(id);
  r.mutable_sampling()->set_temperature(0.0f);
  r.mutable_sampling()->set_max_tokens(max_tokens);
  r.mutable_sampling()->set_ignore_eos(true);
  r.set_seed(7);
  *r.mutable_reservation() = reservation;
  return r;
}

StreamResult ReadStream(grpc::ClientContext& context,
                        grpc::ClientReaderInterface<DecodeEvent>& reader,
                        std::optional<int> cancel_after_tokens) {
  StreamResult result;
  DecodeEvent event;
  while (reader.Read(&event)) {
    if (event.has_delta()) {
      for (int32_t id : event.delta().token_ids()) result.tokens.push_back(id);
    }
    if (event.has_finished()) ++result.num_finished;
    if (cancel_after_tokens && static_cast<int>(result.tokens.size()) >= *cancel_after_tokens) {
      context.TryCancel();
      cancel_after_tokens.reset();
    }
  }
  result.status = reader.Finish();
  return result;
}

absl::StatusOr<std::unique_ptr<WorkerPair>> WorkerPair::Start(
    const std::string& model, const std::vector<std::string>& prefill_flags,
    const std::vector<std::string>& decode_flags) {
  auto pair = std::make_unique<WorkerPair>();
  auto decode = StartWorker(TANDEM_DECODE_BINARY, model, "decode-0", decode_flags);
  if (!decode.ok()) return decode.status();
  pair->decode_ = *std::move(decode);
  auto prefill = StartWorker(TANDEM_PREFILL_BINARY, model, "prefill-0", prefill_flags);
  if (!prefill.ok()) return prefill.status();
  pair->prefill_ = *std::move(prefill);
  pair->decode_stub_ = internal::v1::DecodeWorker::NewStub(
      grpc::CreateChannel(pair->decode_.grpc_address, grpc::InsecureChannelCredentials()));
  pair->prefill_stub_ = internal::v1::PrefillWorker::NewStub(
      grpc::CreateChannel(pair->prefill_.grpc_address, grpc::InsecureChannelCredentials()));
  return pair;
}

absl::StatusOr<internal::v1::Reservation> WorkerPair::Reserve(const std::string& request_id,
                                                              int32_t num_tokens,
                                                              int32_t lease_ms) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(10));
  internal::v1::ReserveRequest request;
  request.set_request_id(request_id);
  request.set_num_prompt_tokens(num_tokens);
  request.set_max_tokens(16);
  request.set_lease_ms(lease_ms);
  internal::v1::ReserveResponse response;
  grpc::Status status = decode_stub_->Reserve(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return response.reservation();
}

grpc::Status WorkerPair::Prefill(const internal::v1::PrefillRequest& request,
                                 internal::v1::PrefillResponse* response,
                                 absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(context, timeout);
  return prefill_stub_->Prefill(&context, request, response);
}

StreamResult WorkerPair::Generate(const std::string& request_id,
                                  const std::vector<int32_t>& prompt, int32_t max_tokens) {
  StreamResult result;
  auto reservation = Reserve(request_id, static_cast<int32_t>(prompt.size()));
  if (!reservation.ok()) {
    result.status = grpc::Status(static_cast<grpc::StatusCode>(reservation.status().code()),
                                 std::string(reservation.status().message()));
    return result;
  }
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(45));
  internal::v1::DecodeRequest decode = GreedyDecodeRequest(request_id, prompt, max_tokens);
  decode.set_reservation_id(reservation->reservation_id());
  auto reader = decode_stub_->Decode(&context, decode);
  internal::v1::PrefillResponse prefilled;
  grpc::Status prefill_status =
      Prefill(PrefillFor(request_id, prompt, max_tokens, *reservation), &prefilled);
  if (!prefill_status.ok()) context.TryCancel();
  result = ReadStream(context, *reader);
  if (!prefill_status.ok()) result.status = prefill_status;
  return result;
}

StreamResult WorkerPair::GenerateColocated(const std::string& request_id,
                                           const std::vector<int32_t>& prompt,
                                           int32_t max_tokens) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(45));
  auto reader = decode_stub_->Decode(&context, GreedyDecodeRequest(request_id, prompt, max_tokens));
  return ReadStream(context, *reader);
}

absl::StatusOr<internal::v1::LoadReport> WorkerPair::Load(bool decode) {
  grpc::ClientContext context;
  SetDeadline(context, absl::Seconds(5));
  internal::v1::LoadReport report;
  grpc::Status status = decode ? decode_stub_->GetLoad(&context, {}, &report)
                               : prefill_stub_->GetLoad(&context, {}, &report);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return report;
}

absl::Status WorkerPair::WaitAllBlocksFree(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  std::string last;
  while (absl::Now() < deadline) {
    auto p = Load(false);
    auto d = Load(true);
    if (p.ok() && d.ok() && p->num_blocks_total() > 0 && d->num_blocks_total() > 0 &&
        p->num_blocks_free() == p->num_blocks_total() &&
        d->num_blocks_free() == d->num_blocks_total()) {
      return absl::OkStatus();
    }
    last = absl::StrCat("prefill: ", p.ok() ? p->ShortDebugString() : p.status().ToString(),
                        " | decode: ", d.ok() ? d->ShortDebugString() : d.status().ToString());
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("blocks still held: ", last));
}

}  // namespace tandem::testing
