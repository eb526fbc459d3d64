#include "cli/remote.h"

#include <grpcpp/grpcpp.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "common/api/api_convert.h"

namespace tandem::cli {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace

std::unique_ptr<v1::Tandem::Stub> MakeStub(const std::string& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::Tandem::NewStub(
      grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args));
}

absl::StatusOr<v1::Finished> RemoteGenerate(const RemoteGenerateOptions& options,
                                            std::ostream& out) {
  auto stub = MakeStub(options.server);
  v1::GenerateRequest request;
  request.set_text(options.prompt);
  SamplingParamsToProto(options.sampling, request.mutable_sampling());
  if (!options.sampling.seed) request.mutable_sampling()->clear_seed();
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options.timeout));
  auto reader = stub->GenerateStream(&context, request);
  v1::GenerateStreamResponse response;
  std::map<int32_t, std::string> texts;
  int32_t outputs = options.sampling.beam_search() ? options.sampling.num_return_sequences
                                                   : options.sampling.n;
  bool stream = outputs == 1;
  std::optional<v1::Finished> first_finished;
  while (reader->Read(&response)) {
    if (response.has_delta()) {
      if (stream) out << response.delta().text() << std::flush;
      texts[response.delta().index()] += response.delta().text();
    } else if (response.has_finished()) {
      if (!first_finished || response.finished().index() == 0) first_finished = response.finished();
    } else if (response.has_error()) {
      return absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                          response.error().message());
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return FromGrpc(status);
  for (auto& [index, text] : texts) {
    if (!stream) out << "\n--- output " << index << "\n" << text;
  }
  if (!first_finished) return absl::DataLossError("stream ended without a finished message");
  return *first_finished;
}

absl::Status WaitForCluster(const std::string& server, int num_prefill, int num_decode,
                            absl::Duration timeout) {
  auto stub = MakeStub(server);
  absl::Time deadline = absl::Now() + timeout;
  grpc::Status last;
  while (absl::Now() < deadline) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    v1::ModelInfoResponse info;
    last = stub->ModelInfo(&context, v1::ModelInfoRequest(), &info);
    if (last.ok() && info.num_prefill_workers() >= num_prefill &&
        info.num_decode_workers() >= num_decode) {
      return absl::OkStatus();
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "router at ", server, " did not report ", num_prefill, " prefill and ", num_decode,
      " decode workers healthy in time (last: ", last.error_message(), ")"));
}

}  // namespace tandem::cli
