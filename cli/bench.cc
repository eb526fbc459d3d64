#include "cli/bench.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <numeric>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/remote.h"

namespace tandem::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  grpc::StatusCode code = grpc::StatusCode::OK;
  double ttft_ms = 0, e2e_ms = 0;
  std::vector<double> itl_ms;
  int32_t output_tokens = 0;
  double tpot_ms() const {
    return output_tokens > 1 ? (e2e_ms - ttft_ms) / (output_tokens - 1) : 0.0;
  }
};

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

Result RunOne(v1::Tandem::Stub& stub, const v1::GenerateRequest& request, double timeout_s) {
  Result r;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  auto start = Clock::now(), last = start;
  auto reader = stub.GenerateStream(&context, request);
  v1::GenerateStreamResponse response;
  while (reader->Read(&response)) {
    if (!response.has_delta() || response.delta().token_ids_size() == 0) continue;
    auto now = Clock::now();
    if (r.output_tokens == 0) {
      r.ttft_ms = Ms(start, now);
    } else {
      r.itl_ms.push_back(Ms(last, now));
    }
    last = now;
    r.output_tokens += response.delta().token_ids_size();
  }
  r.code = reader->Finish().error_code();
  r.e2e_ms = Ms(start, Clock::now());
  return r;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

nlohmann::json Distribution(const std::vector<double>& v) {
  nlohmann::json d = nlohmann::json::array();
  for (double p : {10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0}) {
    d.push_back({{"percentage", p}, {"latency_ms", Percentile(v, p)}});
  }
  return d;
}

std::string CodeName(grpc::StatusCode code) {
  static const std::map<int, std::string> kNames = {
      {0, "OK"}, {1, "Canceled"}, {2, "Unknown"}, {3, "InvalidArgument"},
      {4, "DeadlineExceeded"}, {5, "NotFound"}, {8, "ResourceExhausted"},
      {9, "FailedPrecondition"}, {13, "Internal"}, {14, "Unavailable"}};
  auto it = kNames.find(code);
  return it != kNames.end() ? it->second : absl::StrCat("Code", static_cast<int>(code));
}

nlohmann::json Report(const BenchOptions& o, const std::vector<Result>& results, double wall_s) {
  std::vector<double> ttft, tpot, e2e, itl;
  std::map<std::string, int> codes;
  int64_t tokens = 0, good = 0;
  for (const Result& r : results) {
    ++codes[CodeName(r.code)];
    if (r.code != grpc::StatusCode::OK) continue;
    ttft.push_back(r.ttft_ms);
    tpot.push_back(r.tpot_ms());
    e2e.push_back(r.e2e_ms);
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    tokens += r.output_tokens;
    if (r.ttft_ms <= o.ttft_slo_ms && r.tpot_ms() <= o.tpot_slo_ms) ++good;
  }
  double avg = e2e.empty() ? 0.0 : std::accumulate(e2e.begin(), e2e.end(), 0.0) / e2e.size();
  return {{"count", results.size()},
          {"total_s", wall_s},
          {"average_ms", avg},
          {"fastest_ms", e2e.empty() ? 0.0 : *std::min_element(e2e.begin(), e2e.end())},
          {"slowest_ms", e2e.empty() ? 0.0 : *std::max_element(e2e.begin(), e2e.end())},
          {"rps", results.size() / wall_s},
          {"output_tokens_per_s", tokens / wall_s},
          {"goodput_rps", good / wall_s},
          {"slo", {{"ttft_ms", o.ttft_slo_ms}, {"tpot_ms", o.tpot_slo_ms}}},
          {"latencyDistribution", Distribution(e2e)},
          {"ttftDistribution", Distribution(ttft)},
          {"tpotDistribution", Distribution(tpot)},
          {"itlDistribution", Distribution(itl)},
          {"statusCodeDistribution", codes}};
}

void PrintTable(const nlohmann::json& r, std::ostream& out) {
  out << absl::StrFormat("requests %d in %.2f s: %.2f req/s, %.1f output tok/s, goodput %.2f req/s\n",
                         r["count"].get<int>(), r["total_s"].get<double>(), r["rps"].get<double>(),
                         r["output_tokens_per_s"].get<double>(), r["goodput_rps"].get<double>());
  out << absl::StrFormat("%-8s %10s %10s %10s %10s\n", "ms", "p50", "p90", "p99", "");
  for (const char* key : {"ttftDistribution", "tpotDistribution", "itlDistribution",
                          "latencyDistribution"}) {
    const auto& d = r[key];
    out << absl::StrFormat("%-8s %10.2f %10.2f %10.2f\n", std::string(key).substr(0, 4),
                           d[2]["latency_ms"].get<double>(), d[4]["latency_ms"].get<double>(),
                           d[6]["latency_ms"].get<double>());
  }
  out << "status: " << r["statusCodeDistribution"].dump() << "\n";
}

}  // namespace

absl::Status ValidateBenchOptions(const BenchOptions& o) {
  if (o.server.empty()) return absl::InvalidArgumentError("server must be host:port");
  if (o.num_requests < 1) return absl::InvalidArgumentError("requests must be >= 1");
  if (o.rate < 0) return absl::InvalidArgumentError("rate must be >= 0 (0: closed loop)");
  if (o.concurrency < 1) return absl::InvalidArgumentError("concurrency must be >= 1");
  if (o.prompt_len_min < 1 || o.prompt_len_max < o.prompt_len_min) {
    return absl::InvalidArgumentError("prompt_len must be N or MIN:MAX with 1 <= MIN <= MAX");
  }
  if (o.output_len_min < 1 || o.output_len_max < o.output_len_min) {
    return absl::InvalidArgumentError("output_len must be N or MIN:MAX with 1 <= MIN <= MAX");
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> RunBench(const BenchOptions& o, std::ostream& table) {
  if (absl::Status s = ValidateBenchOptions(o); !s.ok()) return s;
  auto stub = MakeStub(o.server);
  v1::ModelInfoResponse info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::Status s = stub->ModelInfo(&context, {}, &info);
    if (!s.ok()) return absl::UnavailableError(absl::StrCat("ModelInfo: ", s.error_message()));
  }
  std::mt19937_64 rng(o.seed);
  std::vector<v1::GenerateRequest> requests(o.num_requests);
  for (v1::GenerateRequest& r : requests) {
    int32_t len = o.prompt_len_min + static_cast<int32_t>(rng() % (o.prompt_len_max - o.prompt_len_min + 1));
    for (int32_t i = 0; i < len; ++i) {
      r.mutable_token_ids()->add_ids(static_cast<int32_t>(10 + rng() % (info.vocab_size() - 10)));
    }
    r.mutable_sampling()->set_max_tokens(o.output_len_min + static_cast<int32_t>(rng() % (o.output_len_max - o.output_len_min + 1)));
    r.mutable_sampling()->set_ignore_eos(true);
    r.mutable_sampling()->set_temperature(0.0f);
  }
  std::vector<Result> results(o.num_requests);
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  std::vector<std::thread> threads;
  std::exponential_distribution<double> gap(o.rate > 0 ? o.rate : 1.0);
  auto start = Clock::now();
  auto next = start;
  for (int32_t i = 0; i < o.num_requests; ++i) {
    if (o.rate > 0) {
      std::this_thread::sleep_until(next);
      next += std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(o.poisson ? gap(rng) : 1.0 / o.rate));
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return in_flight < o.concurrency; });
      ++in_flight;
    }
    threads.emplace_back([&, i] {
      results[i] = RunOne(*stub, requests[i], o.timeout_s);
      std::lock_guard<std::mutex> lock(mu);
      --in_flight;
      cv.notify_all();
    });
  }
  for (std::thread& t : threads) t.join();
  nlohmann::json report = Report(o, results, Ms(start, Clock::now()) / 1000.0);
  PrintTable(report, table);
  return report;
}

}  // namespace tandem::cli
