#include "decode_worker/decode_service.h"

#include "absl/strings/str_cat.h"
#include "common/api/api_convert.h"
#include "common/logging.h"
#include "decode_worker/decode_stream.h"
#include "common/service/worker/rpc_util.h"

namespace tandem {
namespace {

constexpr int32_t kDefaultLeaseMs = 30'000;
constexpr int32_t kMaxLeaseMs = 600'000;

using internal::v1::DecodeEvent;

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* context, const absl::Status& s) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace

DecodeService::DecodeService(DecodeContext& ctx)
    : ctx_(ctx),
      vocab_size_(ctx.engine.config().vocab_size),
      context_tokens_(ctx.engine.config().max_position_embeddings),
      block_size_tokens_(ctx.engine.kv_layout().block_size_tokens) {}

absl::Status DecodeService::ValidateReserve(const internal::v1::ReserveRequest& r) const {
  if (ctx_.draining) return absl::UnavailableError("decode worker is draining");
  if (r.request_id().empty()) return absl::InvalidArgumentError("request_id must not be empty");
  if (r.num_prompt_tokens() < 1 || r.num_prompt_tokens() >= context_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_prompt_tokens must be in [1, ", context_tokens_ - 1, "], got ",
                     r.num_prompt_tokens()));
  }
  if (r.max_tokens() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ", r.max_tokens()));
  }
  if (r.lease_ms() < 0 || r.lease_ms() > kMaxLeaseMs) {
    return absl::InvalidArgumentError(absl::StrCat("lease_ms must be in [0, ", kMaxLeaseMs,
                                                   "] (0: default ", kDefaultLeaseMs,
                                                   "), got ", r.lease_ms()));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* DecodeService::Reserve(grpc::CallbackServerContext* context,
                                                 const internal::v1::ReserveRequest* request,
                                                 internal::v1::ReserveResponse* response) {
  if (absl::Status s = ValidateReserve(*request); !s.ok()) return Done(context, s);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::string id = absl::StrCat(request->request_id(), "#r", next_reservation_++);
  int32_t lease_ms = request->lease_ms() > 0 ? request->lease_ms() : kDefaultLeaseMs;
  absl::Time lease = absl::Now() + absl::Milliseconds(lease_ms);
  int64_t num_tokens = request->num_prompt_tokens();
  std::string request_id = request->request_id();
  // Runs on the engine thread: record, expect the KV, answer. Nothing here blocks.
  ctx_.engine.Reserve(id, num_tokens, lease, [=, this](Reservation reserved) {
    if (!reserved.status.ok()) {
      reactor->Finish(ToGrpcStatus(reserved.status));
      return;
    }
    ctx_.table.AddReservation(id, {.request_id = request_id, .num_tokens = num_tokens,
                                   .num_blocks = static_cast<int32_t>(reserved.blocks.size()),
                                   .lease_deadline = lease});
    ctx_.receiver.Expect(id, {reserved.blocks.begin(), reserved.blocks.end()}, lease);
    FillReservation(id, reserved, lease, response->mutable_reservation());
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

void DecodeService::FillReservation(const std::string& id, const Reservation& reserved,
                                    absl::Time lease, internal::v1::Reservation* out) const {
  out->set_reservation_id(id);
  for (BlockId block : reserved.blocks) out->add_block_ids(block);
  out->set_block_size_tokens(static_cast<int32_t>(block_size_tokens_));
  out->set_lease_deadline_unix_ms(absl::ToUnixMillis(lease));
  out->set_kv_endpoint(ctx_.receiver.endpoint());
  *out->mutable_decode_worker() = ctx_.identity();
}

absl::StatusOr<EngineRequest> DecodeService::ToEngineRequest(
    const internal::v1::DecodeRequest& r, absl::Time deadline) const {
  if (r.request_id().empty()) return absl::InvalidArgumentError("request_id must not be empty");
  absl::Status s = ValidateTokenIds(r.prompt_token_ids(), vocab_size_, "prompt_token_ids", false);
  if (s.ok()) {
    s = ValidateTokenIds(r.generated_token_ids(), vocab_size_, "generated_token_ids", true);
  }
  if (!s.ok()) return s;
  absl::StatusOr<SamplingParams> params = SamplingParamsFromProto(r.sampling(), vocab_size_);
  if (!params.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling: ", std::string(params.status().message())));
  }
  return EngineRequest{
      .request_id = r.reservation_id().empty() ? r.request_id() : r.reservation_id(),
      .prompt_ids = {r.prompt_token_ids().begin(), r.prompt_token_ids().end()},
      .generated_ids = {r.generated_token_ids().begin(), r.generated_token_ids().end()},
      .params = *std::move(params),
      .seed = r.seed(),
      .skip_special_tokens = r.skip_special_tokens(),
      .deadline = deadline};
}

grpc::ServerWriteReactor<DecodeEvent>* DecodeService::Decode(
    grpc::CallbackServerContext* context, const internal::v1::DecodeRequest* request) {
  absl::StatusOr<EngineRequest> engine_request = ToEngineRequest(*request, CallDeadline(*context));
  int32_t num_outputs = 1;
  if (engine_request.ok()) {
    const SamplingParams& p = engine_request->params;
    num_outputs = p.beam_search() ? p.num_return_sequences : p.n;
  }
  auto* stream = new DecodeStream(
      ctx_, engine_request.ok() ? engine_request->request_id : request->request_id(), num_outputs);
  if (!engine_request.ok()) {
    stream->Reject(engine_request.status());
    return stream;
  }
  engine_request->sink = stream->sink();
  if (request->reservation_id().empty()) {
    if (ctx_.draining) {
      stream->Reject(absl::UnavailableError("decode worker is draining"));
      return stream;
    }
    if (absl::Status s = ctx_.table.AddColocated(stream->id()); !s.ok()) {
      stream->Reject(s);
      return stream;
    }
    stream->OwnEntry();
    if (absl::Status s = ctx_.engine.AddRequest(*std::move(engine_request)); !s.ok()) {
      stream->Reject(s);  // OnDone removes the entry
    }
    return stream;
  }
  absl::StatusOr<std::optional<ReadyToDecode>> attached =
      ctx_.table.AttachCall(stream->id(), *std::move(engine_request));
  if (!attached.ok()) {
    stream->Reject(attached.status());
    return stream;
  }
  stream->OwnEntry();
  if (attached->has_value()) ctx_.StartDecode(**std::move(attached));
  return stream;
}

grpc::ServerUnaryReactor* DecodeService::Abort(grpc::CallbackServerContext* context,
                                               const internal::v1::AbortRequest* request,
                                               internal::v1::AbortResponse* response) {
  absl::Status reason = absl::CancelledError(
      absl::StrCat("aborted by the router", request->reason().empty() ? "" : ": ",
                   request->reason()));
  std::vector<std::string> ids;
  if (!request->reservation_id().empty()) {
    ids.push_back(request->reservation_id());
  } else {
    ids = ctx_.table.IdsOf(request->request_id());
  }
  for (const std::string& id : ids) ctx_.Release(id, reason);
  TANDEM_LOG(INFO) << "event=abort request_id=" << request->request_id()
                   << " reservation_id=" << request->reservation_id() << " released=" << ids.size();
  return Done(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* DecodeService::GetLoad(grpc::CallbackServerContext* context,
                                                 const internal::v1::GetLoadRequest* request,
                                                 internal::v1::LoadReport* response) {
  *response = MakeLoadReport(ctx_.engine.stats(), ctx_.identity(), ctx_.draining,
                             ctx_.table.num_reserved_blocks());
  return Done(context, absl::OkStatus());
}

}  // namespace tandem
