#include "router/router_options.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tandem::router {
namespace {

absl::Status Invalid(std::string_view flag, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(flag), " ", std::string(why)));
}

absl::Status AtLeast(std::string_view flag, int64_t value, int64_t min) {
  if (value >= min) return absl::OkStatus();
  return Invalid(flag, absl::StrCat("must be >= ", min, ", got ", value));
}

absl::Status Positive(std::string_view flag, absl::Duration d) {
  if (d > absl::ZeroDuration() && d != absl::InfiniteDuration()) return absl::OkStatus();
  return Invalid(flag, absl::StrCat("must be a positive finite duration, got ",
                                    absl::FormatDuration(d)));
}

}  // namespace

absl::Status ValidateAddress(std::string_view flag, std::string_view address, int min_port) {
  size_t colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return Invalid(flag, absl::StrCat("must be host:port, got \"", std::string(address), "\""));
  }
  int port = 0;
  std::string port_text(address.substr(colon + 1));
  if (!absl::SimpleAtoi(port_text, &port) || port < min_port || port > 65535) {
    return Invalid(flag, absl::StrCat("port must be in [", min_port, ", 65535], got \"",
                                      port_text, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ParseAddressList(std::string_view flag,
                                                          std::string_view value) {
  std::vector<std::string> out;
  if (value.empty()) return out;
  for (absl::string_view part : absl::StrSplit(absl::string_view(value.data(), value.size()),
                                               ',')) {
    std::string address(part);
    if (absl::Status s = ValidateAddress(flag, address, 1); !s.ok()) return s;
    out.push_back(std::move(address));
  }
  return out;
}

absl::Status ValidateRouterOptions(const RouterOptions& o) {
  if (o.model_dir.empty()) return Invalid("--model", "must name a model directory");
  if (absl::Status s = ValidateAddress("--listen", o.listen, 0); !s.ok()) return s;
  for (const std::string& a : o.prefill_addresses) {
    if (absl::Status s = ValidateAddress("--prefill", a, 1); !s.ok()) return s;
  }
  for (const std::string& a : o.decode_addresses) {
    if (absl::Status s = ValidateAddress("--decode", a, 1); !s.ok()) return s;
  }
  if (absl::Status s = AtLeast("--max_inflight", o.max_inflight, 1); !s.ok()) return s;
  if (absl::Status s = AtLeast("--max_queue", o.max_queue, 0); !s.ok()) return s;
  if (absl::Status s = AtLeast("--max_attempts", o.retry.max_attempts, 1); !s.ok()) return s;
  if (o.retry.max_attempts > 100) {
    return Invalid("--max_attempts", absl::StrCat("must be <= 100, got ", o.retry.max_attempts));
  }
  if (absl::Status s = Positive("--request_timeout", o.request_timeout); !s.ok()) return s;
  if (absl::Status s = Positive("--drain_timeout", o.drain_timeout); !s.ok()) return s;
  if (absl::Status s = Positive("poll_interval", o.poll_interval); !s.ok()) return s;
  if (absl::Status s = Positive("poll_timeout", o.poll_timeout); !s.ok()) return s;
  if (absl::Status s = Positive("report_timeout", o.report_timeout); !s.ok()) return s;
  int32_t b = o.kv_block_size_tokens;
  if (b != 16 && b != 32 && b != 64) {
    return Invalid("--kv_block_size_tokens", absl::StrCat("must be 16, 32 or 64, got ", b));
  }
  return ValidateRetryOptions(o.retry);
}

}  // namespace tandem::router
