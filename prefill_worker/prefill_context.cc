#include "prefill_worker/prefill_context.h"

#include "absl/strings/str_cat.h"
#include "prefill_worker/prefill_call.h"

namespace tandem {

internal::v1::WorkerIdentity PrefillContext::identity() const {
  std::lock_guard<std::mutex> lock(mu_);
  return identity_;
}

void PrefillContext::set_identity(internal::v1::WorkerIdentity identity) {
  std::lock_guard<std::mutex> lock(mu_);
  identity_ = std::move(identity);
}

absl::Status PrefillContext::AddCall(const std::string& id, std::shared_ptr<PrefillCall> call) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!calls_.try_emplace(id, std::move(call)).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("reservation.reservation_id \"", id, "\" is already being prefilled"));
  }
  return absl::OkStatus();
}

void PrefillContext::RemoveCall(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(id);
}

std::vector<std::shared_ptr<PrefillCall>> PrefillContext::CallsMatching(
    const std::string& request_id, const std::string& reservation_id) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<PrefillCall>> matching;
  for (const auto& [id, call] : calls_) {
    if (reservation_id.empty() ? call->request_id() == request_id : id == reservation_id) {
      matching.push_back(call);
    }
  }
  return matching;
}

size_t PrefillContext::num_calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

}  // namespace tandem
