#include "decode_worker/decode_context.h"

namespace tandem {

void FailStream(OutputSink& sink, const std::string& id, absl::Status status) {
  sink.OnOutput({.request_id = id, .finish = OutputFinish::kAbort, .status = std::move(status)});
}

void DecodeContext::StartDecode(ReadyToDecode ready) {
  std::optional<int32_t> first_token;
  std::optional<SampledLogprobs> first_logprobs;
  if (ready.arrival.first_token_id >= 0) {
    first_token = ready.arrival.first_token_id;
    // The data plane carries the chosen token's logprob only (no top alternatives).
    if (ready.request.params.logprobs) {
      first_logprobs = SampledLogprobs{
          .chosen = {.token_id = *first_token, .logprob = ready.arrival.first_logprob}};
    }
  }
  ready.request.prefill_cached_tokens = ready.arrival.cached_prompt_tokens;
  std::string id = ready.request.request_id;
  std::shared_ptr<OutputSink> sink = ready.request.sink;
  absl::Status started = engine.StartDecode(std::move(ready.request), first_token,
                                            std::move(first_logprobs));
  if (!started.ok()) {
    engine.Abort(id, started);
    FailStream(*sink, id, started);
  }
}

void DecodeContext::Release(const std::string& id, const absl::Status& reason) {
  receiver.Cancel(id);
  std::shared_ptr<OutputSink> parked = table.TakeUnstarted(id);
  engine.Abort(id, reason);
  if (parked) FailStream(*parked, id, reason);
}

}  // namespace tandem
