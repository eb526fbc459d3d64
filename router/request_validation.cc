#include "router/request_validation.h"

#include "absl/strings/str_cat.h"
#include "common/api/api_convert.h"

namespace tandem::router {
namespace {

absl::Status Invalid(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), " ", std::string(why)));
}

bool RequestIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '.' || c == '_' || c == ':' || c == '-';
}

absl::StatusOr<std::vector<int32_t>> PromptIds(const v1::GenerateRequest& r,
                                               const ModelContext& model) {
  switch (r.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (r.text().empty()) return Invalid("text", "must not be empty");
      bool add_special = !r.has_add_special_tokens() || r.add_special_tokens();
      return TokenizeText(model, "text", r.text(), add_special);
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = r.token_ids().ids();
      if (ids.empty()) return Invalid("token_ids.ids", "must not be empty");
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= model.vocab_size()) {
          return Invalid(absl::StrCat("token_ids.ids[", i, "]"),
                         absl::StrCat("must be in [0, ", model.vocab_size(), "), got ", ids[i]));
        }
      }
      return std::vector<int32_t>(ids.begin(), ids.end());
    }
    case v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  return Invalid("prompt", "must be set: text or token_ids");
}

// The prompt must leave room for at least one token, and max_tokens must fit what is left.
absl::Status CheckContext(size_t num_prompt_tokens, const SamplingParams& params,
                          const ModelContext& model) {
  int64_t context = model.max_context_tokens();
  int64_t prompt = static_cast<int64_t>(num_prompt_tokens);
  if (prompt >= context) {
    return Invalid("prompt", absl::StrCat("has ", prompt, " tokens; the model's context is ",
                                          context, " tokens (at most ", context - 1,
                                          " prompt tokens)"));
  }
  if (params.max_tokens > context - prompt) {
    return Invalid("sampling.max_tokens",
                   absl::StrCat("must be at most the context left after the prompt (",
                                context - prompt, "), got ", params.max_tokens));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequestId(std::string_view id) {
  if (id.size() > kMaxRequestIdBytes) {
    return Invalid("request_id", absl::StrCat("must be at most ", kMaxRequestIdBytes,
                                              " bytes, got ", id.size()));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    if (!RequestIdChar(id[i])) {
      return Invalid("request_id",
                     absl::StrCat("must use only [A-Za-z0-9._:-], got byte ",
                                  static_cast<int>(static_cast<unsigned char>(id[i])),
                                  " at offset ", i));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> TokenizeText(const ModelContext& model,
                                                  std::string_view field, std::string_view text,
                                                  bool add_special_tokens) {
  absl::StatusOr<std::vector<int32_t>> ids = model.tokenizer->Encode(text, add_special_tokens);
  if (!ids.ok()) {
    return Invalid(field, absl::StrCat("is not valid: ", std::string(ids.status().message())));
  }
  return ids;
}

absl::StatusOr<PreparedRequest> PrepareRequest(const v1::GenerateRequest& request,
                                               const ModelContext& model,
                                               std::string_view assigned_id,
                                               uint64_t random_seed) {
  if (absl::Status s = ValidateRequestId(request.request_id()); !s.ok()) return s;
  PreparedRequest out;
  out.request_id = request.request_id().empty() ? std::string(assigned_id)
                                                : request.request_id();
  absl::StatusOr<std::vector<int32_t>> ids = PromptIds(request, model);
  if (!ids.ok()) return ids.status();
  if (ids->empty()) return Invalid("text", "has no tokens");
  out.prompt_ids = *std::move(ids);
  absl::StatusOr<SamplingParams> params =
      SamplingParamsFromProto(request.sampling(), model.vocab_size());
  if (!params.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.", std::string(params.status().message())));
  }
  out.params = *std::move(params);
  if (absl::Status s = CheckContext(out.prompt_ids.size(), out.params, model); !s.ok()) return s;
  if (!out.params.seed) out.params.seed = random_seed;
  out.skip_special_tokens = !request.has_skip_special_tokens() || request.skip_special_tokens();
  return out;
}

}  // namespace tandem::router
