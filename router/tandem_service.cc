#include "router/tandem_service.h"

#include "router/generate_reactors.h"
#include "router/request_validation.h"

namespace tandem::router {

grpc::ServerUnaryReactor* TandemService::Generate(grpc::CallbackServerContext* context,
                                                  const v1::GenerateRequest* request,
                                                  v1::GenerateResponse* response) {
  return StartGenerate(ctx_, context, request, response);
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* TandemService::GenerateStream(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return StartGenerateStream(ctx_, context, request);
}

grpc::ServerUnaryReactor* TandemService::Tokenize(grpc::CallbackServerContext* context,
                                                  const v1::TokenizeRequest* request,
                                                  v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  bool add_special = !request->has_add_special_tokens() || request->add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids =
      TokenizeText(*ctx_->model, "text", request->text(), add_special);
  if (!ids.ok()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 std::string(ids.status().message())));
    return reactor;
  }
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_tokens(std::string(ctx_->model->tokenizer->IdToToken(id)));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* TandemService::ModelInfo(grpc::CallbackServerContext* context,
                                                   const v1::ModelInfoRequest*,
                                                   v1::ModelInfoResponse* response) {
  FillModelInfo(*ctx_, response);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

void FillModelInfo(const RouterContext& ctx, v1::ModelInfoResponse* response) {
  const ModelContext& model = *ctx.model;
  response->set_model(model.name);
  response->set_architecture(model.config.architecture);
  response->set_vocab_size(static_cast<int32_t>(model.vocab_size()));
  response->set_max_context_tokens(static_cast<int32_t>(model.max_context_tokens()));
  for (int32_t id : model.config.eos_token_ids) response->add_eos_token_ids(id);
  if (model.config.bos_token_id) response->set_bos_token_id(*model.config.bos_token_id);
  response->set_kv_block_size_tokens(model.kv_block_size_tokens);
  absl::Time now = absl::Now();
  int32_t prefill = 0;
  for (const WorkerView& w : ctx.registry->Candidates(WorkerRole::kPrefill, now)) {
    prefill += w.role == WorkerRole::kPrefill ? 1 : 0;
  }
  response->set_num_prefill_workers(prefill);
  response->set_num_decode_workers(
      static_cast<int32_t>(ctx.registry->Candidates(WorkerRole::kDecode, now).size()));
}

}  // namespace tandem::router
