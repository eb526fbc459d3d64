#include "decode_worker/kv_arrival_poller.h"

#include "common/logging.h"

namespace tandem {
namespace {

constexpr absl::Duration kWakeInterval = absl::Milliseconds(20);
// A reservation whose KV arrived but whose Decode call never came is forgotten this long
// after its lease (the engine frees its blocks 5 s after the lease by itself).
constexpr absl::Duration kAbandonGrace = absl::Seconds(10);

}  // namespace

KvArrivalPoller::KvArrivalPoller(DecodeContext& ctx) : ctx_(ctx) {
  thread_ = std::thread([this] { Loop(); });
}

KvArrivalPoller::~KvArrivalPoller() { Stop(); }

void KvArrivalPoller::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void KvArrivalPoller::Loop() {
  while (!stopping_) {
    for (KvArrival& arrival : ctx_.receiver.WaitForArrivals(kWakeInterval)) {
      Handle(std::move(arrival));
    }
    for (const std::string& id : ctx_.table.SweepAbandoned(absl::Now(), kAbandonGrace)) {
      ctx_.engine.Abort(id, absl::DeadlineExceededError("no Decode call before the lease"));
    }
  }
}

void KvArrivalPoller::Handle(KvArrival arrival) {
  std::string id = arrival.reservation_id;
  absl::Status status = arrival.status;
  ReservationTable::ArrivalOutcome outcome = ctx_.table.OnArrival(std::move(arrival));
  if (outcome.ready) {
    TANDEM_LOG(INFO) << "event=kv_arrived id=" << id;
    ctx_.StartDecode(*std::move(outcome.ready));
    return;
  }
  if (!outcome.failed) return;
  TANDEM_LOG(WARNING) << "event=kv_failed id=" << id << " code=" << status.code()
                      << " error=\"" << status.message() << "\"";
  ctx_.engine.Abort(id, status);  // the receiver already forgot it: safe to reuse the blocks
  if (outcome.failed_sink) FailStream(*outcome.failed_sink, id, status);
}

}  // namespace tandem
