#include "router/output_tracker.h"

#include <algorithm>

namespace tandem::router {

void OutputTracker::BeginAttempt(bool replay) {
  for (Output& o : outputs_) {
    o.skip_tokens = replay ? o.tokens.size() : 0;
    o.skip_bytes = replay ? o.text_bytes : 0;
  }
}

OutputTracker::Output* OutputTracker::Find(int32_t index) {
  if (index < 0 || index >= num_outputs()) return nullptr;
  return &outputs_[static_cast<size_t>(index)];
}

bool OutputTracker::Accept(v1::Delta& delta) {
  Output* o = Find(delta.index());
  if (o == nullptr || o->finished) return false;
  size_t trim = std::min(o->skip_tokens, static_cast<size_t>(delta.token_ids_size()));
  if (trim > 0) {
    auto* ids = delta.mutable_token_ids();
    ids->erase(ids->begin(), ids->begin() + static_cast<int>(trim));
    size_t trim_logprobs = std::min(trim, static_cast<size_t>(delta.logprobs_size()));
    auto* lps = delta.mutable_logprobs();
    lps->erase(lps->begin(), lps->begin() + static_cast<int>(trim_logprobs));
    o->skip_tokens -= trim;
  }
  size_t trim_bytes = std::min(o->skip_bytes, delta.text().size());
  if (trim_bytes > 0) {
    delta.mutable_text()->erase(0, trim_bytes);
    o->skip_bytes -= trim_bytes;
  }
  o->tokens.insert(o->tokens.end(), delta.token_ids().begin(), delta.token_ids().end());
  o->text_bytes += delta.text().size();
  return delta.token_ids_size() > 0 || !delta.text().empty();
}

bool OutputTracker::AcceptFinished(int32_t index) {
  Output* o = Find(index);
  if (o == nullptr || o->finished) return false;
  o->finished = true;
  return true;
}

bool OutputTracker::AllFinished() const {
  return std::all_of(outputs_.begin(), outputs_.end(),
                     [](const Output& o) { return o.finished; });
}

bool OutputTracker::AnyRelayed() const {
  return std::any_of(outputs_.begin(), outputs_.end(), [](const Output& o) {
    return !o.tokens.empty() || o.text_bytes > 0 || o.finished;
  });
}

int64_t OutputTracker::total_tokens() const {
  int64_t n = 0;
  for (const Output& o : outputs_) n += static_cast<int64_t>(o.tokens.size());
  return n;
}

}  // namespace tandem::router
