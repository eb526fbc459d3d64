#include "decode_worker/reservation_table.h"

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

// Tokens whose KV the request expects from the prefill worker: prompt + generated, minus
// the last when it fans out (n > 1, beams: the decode worker computes that token itself).
int64_t KvTokensOf(const EngineRequest& r) {
  int64_t known = static_cast<int64_t>(r.prompt_ids.size() + r.generated_ids.size());
  bool fans_out = r.params.n > 1 || r.params.beam_search();
  return fans_out ? known - 1 : known;
}

}  // namespace

void ReservationTable::AddReservation(const std::string& id, ReservationInfo info) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_[id] = Entry{.info = std::move(info)};
}

absl::Status ReservationTable::AddColocated(const std::string& request_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = entries_.try_emplace(request_id);
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("request_id \"", request_id, "\" is already running on this worker"));
  }
  it->second.info.request_id = request_id;
  it->second.colocated = true;
  it->second.started = true;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<ReadyToDecode>> ReservationTable::AttachCall(
    const std::string& id, EngineRequest request) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.colocated) {
    return absl::NotFoundError(absl::StrCat("reservation_id \"", id,
                                            "\" is unknown: never reserved, aborted, or its "
                                            "lease expired"));
  }
  Entry& e = it->second;
  if (e.request || e.started) {
    return absl::AlreadyExistsError(
        absl::StrCat("reservation_id \"", id, "\" already has a Decode call"));
  }
  if (request.request_id != id || e.info.request_id.empty()) {
    return absl::InternalError("engine request id must be the reservation id");
  }
  if (int64_t kv = KvTokensOf(request); kv != e.info.num_tokens) {
    return absl::FailedPreconditionError(absl::StrCat(
        "reservation_id \"", id, "\" holds KV for ", e.info.num_tokens,
        " tokens but prompt_token_ids + generated_token_ids need ", kv));
  }
  if (!e.arrival) {
    e.request = std::move(request);
    return std::optional<ReadyToDecode>();
  }
  e.started = true;
  ReadyToDecode ready{.request = std::move(request), .arrival = std::move(*e.arrival)};
  e.arrival.reset();
  return std::optional<ReadyToDecode>(std::move(ready));
}

ReservationTable::ArrivalOutcome ReservationTable::OnArrival(KvArrival arrival) {
  std::lock_guard<std::mutex> lock(mu_);
  ArrivalOutcome outcome;
  auto it = entries_.find(arrival.reservation_id);
  if (it == entries_.end() || it->second.started) return outcome;  // late: dropped
  Entry& e = it->second;
  if (!arrival.status.ok()) {
    outcome.failed = true;
    if (e.request) outcome.failed_sink = e.request->sink;
    entries_.erase(it);
    return outcome;
  }
  if (!e.request) {
    e.arrival = std::move(arrival);
    return outcome;
  }
  e.started = true;
  outcome.ready = ReadyToDecode{.request = std::move(*e.request), .arrival = std::move(arrival)};
  e.request.reset();
  return outcome;
}

std::shared_ptr<OutputSink> ReservationTable::TakeUnstarted(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.started) return nullptr;
  std::shared_ptr<OutputSink> sink = it->second.request ? it->second.request->sink : nullptr;
  entries_.erase(it);
  return sink;
}

void ReservationTable::Remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  entries_.erase(id);
}

std::vector<std::string> ReservationTable::IdsOf(const std::string& request_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> ids;
  for (const auto& [id, e] : entries_) {
    if (e.info.request_id == request_id) ids.push_back(id);
  }
  return ids;
}

std::vector<std::string> ReservationTable::SweepAbandoned(absl::Time now, absl::Duration grace) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> swept;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& e = it->second;
    if (!e.started && !e.request && now > e.info.lease_deadline + grace) {
      swept.push_back(it->first);
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
  return swept;
}

size_t ReservationTable::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

int32_t ReservationTable::num_reserved_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  int32_t blocks = 0;
  for (const auto& [id, e] : entries_) {
    if (!e.started) blocks += e.info.num_blocks;
  }
  return blocks;
}

}  // namespace tandem
