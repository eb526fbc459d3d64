// The `tandem` command: up (a local cluster), generate (in-process or against a cluster),
// bench (a load generator).
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/bench.h"
#include "cli/generate.h"
#include "cli/local_cluster.h"
#include "cli/remote.h"
#include "common/engine/engine.h"
#include "common/service/process_identity.h"

ABSL_FLAG(std::string, model, TANDEM_DEFAULT_MODEL_DIR,
          "Hugging Face model directory (default: the embedded tiny Llama-3-style model)");
ABSL_FLAG(std::string, server, "", "generate/bench: router address host:port (generate: empty "
          "runs the model in this process)");
ABSL_FLAG(std::string, prompt, "Licensed under the Apache License",
          "prompt text (the tokenizer adds BOS)");
ABSL_FLAG(int32_t, max_tokens, 64, "tokens to generate at most, >= 1");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature, >= 0 (0: greedy)");
ABSL_FLAG(int32_t, top_k, 0, "keep the k most likely tokens, >= 0 (0: off)");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass, in (0, 1] (1: off)");
ABSL_FLAG(int64_t, seed, -1, "sampling seed, >= 0 (-1: draw one and report it)");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past end-of-sequence tokens");
ABSL_FLAG(float, min_p, 0.0f, "drop tokens below min_p x the top probability, in [0, 1]");
ABSL_FLAG(float, repetition_penalty, 1.0f, "HF repetition penalty over prompt + output, > 0");
ABSL_FLAG(float, presence_penalty, 0.0f, "OpenAI presence penalty, in [-2, 2]");
ABSL_FLAG(float, frequency_penalty, 0.0f, "OpenAI frequency penalty, in [-2, 2]");
ABSL_FLAG(std::vector<std::string>, stop, {}, "comma-separated stop strings");
ABSL_FLAG(int32_t, n, 1, "independent samples, in [1, 16] (needs temperature > 0)");
ABSL_FLAG(int32_t, num_beams, 1, "beam search width, in [1, 16] (needs temperature 0)");
ABSL_FLAG(int32_t, threads, 0, "generate: CPU threads for the model, >= 0 (0: all cores)");
ABSL_FLAG(std::string, backend, "cpu",
          "generate (in-process) and up (every worker): model runner, cpu or cuda");
ABSL_FLAG(int32_t, device, 0, "generate/up with --backend=cuda: CUDA device ordinal");
// up
ABSL_FLAG(int32_t, num_prefill, 1, "up: prefill workers, >= 0 (0: decode workers run whole "
          "requests)");
ABSL_FLAG(int32_t, num_decode, 1, "up: decode workers, >= 1");
ABSL_FLAG(std::vector<std::string>, prefill_devices, {},
          "up with --backend=cuda: CUDA devices of the prefill workers, comma-separated, "
          "worker i takes entry i mod the count (default: --device)");
ABSL_FLAG(std::vector<std::string>, decode_devices, {},
          "up with --backend=cuda: CUDA devices of the decode workers (default: --device)");
ABSL_FLAG(std::string, kv_transport, "auto",
          "up: KV transfer between workers: auto (nccl with --backend=cuda), tcp or nccl");
ABSL_FLAG(double, gpu_memory_fraction, 0.9,
          "up with --backend=cuda: share of each device a worker may fill when "
          "--num_kv_blocks=0");
ABSL_FLAG(int64_t, max_num_batched_tokens, 512,
          "up: tokens per worker engine step (longer prompts are prefilled in chunks)");
ABSL_FLAG(bool, kv_overlap, true,
          "up: prefill workers stream KV while the prompt's last forward pass writes it");
ABSL_FLAG(std::string, pipeline_steps, "auto",
          "generate (in process) and up's workers: on launches each decode step's forward pass "
          "before the previous step's tokens reach the host (tokens fed on the device), off "
          "waits, auto lets the runner decide");
ABSL_FLAG(std::string, listen, "127.0.0.1:8000", "up: the router's address (port 0: any free)");
ABSL_FLAG(int32_t, worker_threads, 1, "up: CPU threads per worker, >= 1");
ABSL_FLAG(int32_t, num_kv_blocks, 2048, "up: KV blocks per worker, >= 1");
ABSL_FLAG(std::string, log_dir, "", "up: logs and ready files (default: a temp dir)");
ABSL_FLAG(std::string, bin_dir, "", "up: folder with tandem-router/-prefill/-decode");
ABSL_FLAG(std::string, ready_file, "", "up: write {\"grpc\": router address} here when ready");
// bench
ABSL_FLAG(int32_t, requests, 100, "bench: requests to send, >= 1");
ABSL_FLAG(double, rate, 0.0, "bench: requests/s, open loop (0: closed loop at --concurrency)");
ABSL_FLAG(bool, poisson, true, "bench: exponential gaps (false: fixed gaps) in open loop");
ABSL_FLAG(int32_t, concurrency, 8, "bench: requests in flight (open loop: the cap)");
ABSL_FLAG(std::string, prompt_len, "32", "bench: prompt tokens, N or MIN:MAX");
ABSL_FLAG(std::string, output_len, "32", "bench: output tokens, N or MIN:MAX");
ABSL_FLAG(double, ttft_slo_ms, 1000.0, "bench: goodput TTFT limit, ms");
ABSL_FLAG(double, tpot_slo_ms, 100.0, "bench: goodput TPOT limit, ms");
ABSL_FLAG(std::string, json_out, "", "bench: write the ghz-style JSON report here ('-': stdout)");

namespace {

constexpr char kUsage[] =
    "tandem: LLM serving with disaggregated prefill and decode.\n"
    "  tandem up [--num_prefill=N] [--num_decode=M] [--listen=HOST:PORT] [--model=DIR]\n"
    "            [--backend=cpu|cuda --device=N | --prefill_devices=0 --decode_devices=1]\n"
    "  tandem generate [--server=HOST:PORT | --backend=cpu|cuda --device=N] [--prompt=TEXT]\n"
    "                  [--max_tokens=N] [sampling flags]\n"
    "  tandem bench --server=HOST:PORT [--requests=N] [--rate=R | --concurrency=C]\n"
    "               [--prompt_len=N|A:B] [--output_len=N|A:B] [--json_out=FILE]\n"
    "sampling flags: --temperature --top_k --top_p --min_p --repetition_penalty\n"
    "  --presence_penalty --frequency_penalty --stop=A,B --n --num_beams --seed --ignore_eos";

int Fail(const absl::Status& status) {
  std::cerr << "error: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

absl::StatusOr<tandem::SamplingParams> SamplingFromFlags() {
  tandem::SamplingParams s;
  s.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  s.temperature = absl::GetFlag(FLAGS_temperature);
  s.top_k = absl::GetFlag(FLAGS_top_k);
  s.top_p = absl::GetFlag(FLAGS_top_p);
  s.min_p = absl::GetFlag(FLAGS_min_p);
  s.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  s.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  s.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  s.stop = absl::GetFlag(FLAGS_stop);
  s.n = absl::GetFlag(FLAGS_n);
  s.num_beams = absl::GetFlag(FLAGS_num_beams);
  s.num_return_sequences = s.num_beams;
  s.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  int64_t seed = absl::GetFlag(FLAGS_seed);
  if (seed < -1) return absl::InvalidArgumentError(absl::StrCat("seed must be >= 0 or -1, got ", seed));
  if (seed >= 0) s.seed = static_cast<uint64_t>(seed);
  return s;
}

int RunGenerate() {
  absl::StatusOr<tandem::SamplingParams> sampling = SamplingFromFlags();
  if (!sampling.ok()) return Fail(sampling.status());
  auto pipeline = tandem::ParsePipelineSteps(absl::GetFlag(FLAGS_pipeline_steps), "pipeline_steps");
  if (!pipeline.ok()) return Fail(pipeline.status());
  std::string prompt = absl::GetFlag(FLAGS_prompt);
  std::cout << prompt << std::flush;
  if (!absl::GetFlag(FLAGS_server).empty()) {
    auto finished = tandem::cli::RemoteGenerate(
        {.server = absl::GetFlag(FLAGS_server), .prompt = prompt, .sampling = *sampling}, std::cout);
    std::cout << "\n";
    if (!finished.ok()) return Fail(finished.status());
    std::cerr << absl::StrFormat(
        "[%d prompt tokens, %d generated, seed=%d, prefill worker %s, decode worker %s, "
        "first token %.1f ms, total %.1f ms]\n",
        finished->usage().prompt_tokens(), finished->usage().completion_tokens(), finished->seed(),
        finished->served_by().prefill_worker(), finished->served_by().decode_worker(),
        finished->timings().first_token_ms(), finished->timings().total_ms());
    return 0;
  }
  tandem::cli::GenerateOptions options{.model_dir = absl::GetFlag(FLAGS_model), .prompt = prompt,
                                       .sampling = *sampling,
                                       .num_threads = absl::GetFlag(FLAGS_threads),
                                       .backend = absl::GetFlag(FLAGS_backend),
                                       .device = absl::GetFlag(FLAGS_device)};
  if (options.num_threads < 0) return Fail(absl::InvalidArgumentError("threads must be >= 0"));
  options.pipeline_steps = *pipeline;
  auto stats = tandem::cli::Generate(options, std::cout);
  std::cout << "\n";
  if (!stats.ok()) return Fail(stats.status());
  std::cerr << absl::StrFormat(
      "[%d prompt tokens, %d generated, finish=%s, seed=%d, first token %.1f ms, decode %.1f "
      "tok/s]\n",
      stats->prompt_tokens, stats->generated_tokens, stats->finish_reason, stats->seed,
      stats->prefill_ms,
      stats->decode_ms > 0 ? 1000.0 * stats->generated_tokens / stats->decode_ms : 0.0);
  return 0;
}

int RunUp() {
  int32_t threads = absl::GetFlag(FLAGS_worker_threads), blocks = absl::GetFlag(FLAGS_num_kv_blocks);
  if (threads < 1) return Fail(absl::InvalidArgumentError("worker_threads must be >= 1"));
  const bool cuda = absl::GetFlag(FLAGS_backend) == "cuda";
  if (blocks < (cuda ? 0 : 1)) {
    return Fail(absl::InvalidArgumentError(cuda ? "num_kv_blocks must be >= 0 (0: from "
                                                  "--gpu_memory_fraction)"
                                                : "num_kv_blocks must be >= 1"));
  }
  if (auto p = tandem::ParsePipelineSteps(absl::GetFlag(FLAGS_pipeline_steps), "pipeline_steps");
      !p.ok()) {
    return Fail(p.status());
  }
  std::vector<int> devices[2];
  const std::vector<std::string> device_flags[2] = {absl::GetFlag(FLAGS_prefill_devices),
                                                    absl::GetFlag(FLAGS_decode_devices)};
  for (int role = 0; role < 2; ++role) {
    for (const std::string& d : device_flags[role]) {
      int device = -1;
      if (!absl::SimpleAtoi(d, &device) || device < 0) {
        return Fail(absl::InvalidArgumentError(absl::StrCat(
            role == 0 ? "prefill_devices" : "decode_devices",
            " must be comma-separated CUDA device ordinals >= 0, got \"", d, "\"")));
      }
      devices[role].push_back(device);
    }
  }
  const std::string kv_transport = tandem::cli::ClusterKvTransport(
      absl::GetFlag(FLAGS_kv_transport), cuda, absl::GetFlag(FLAGS_num_prefill),
      absl::GetFlag(FLAGS_device), devices[0], devices[1]);
  if (kv_transport != absl::GetFlag(FLAGS_kv_transport)) {
    std::cerr << "prefill and decode workers share a GPU: KV over " << kv_transport
              << " (NCCL pairs only different GPUs; see --prefill_devices/--decode_devices)\n";
  }
  std::string log_dir = absl::GetFlag(FLAGS_log_dir);
  if (log_dir.empty()) log_dir = absl::StrCat("/tmp/tandem-up-", ::getpid());
  tandem::InstallShutdownSignalHandlers();
  tandem::cli::LocalClusterOptions options{
      .bin_dir = absl::GetFlag(FLAGS_bin_dir), .model_dir = absl::GetFlag(FLAGS_model),
      .num_prefill = absl::GetFlag(FLAGS_num_prefill), .num_decode = absl::GetFlag(FLAGS_num_decode),
      .router_listen = absl::GetFlag(FLAGS_listen),
      .worker_flags = {absl::StrCat("--threads=", threads), absl::StrCat("--num_kv_blocks=", blocks),
                       "--backend=" + absl::GetFlag(FLAGS_backend),
                       absl::StrCat("--device=", absl::GetFlag(FLAGS_device)),
                       "--kv_transport=" + kv_transport,
                       absl::StrCat("--gpu_memory_fraction=",
                                    absl::GetFlag(FLAGS_gpu_memory_fraction)),
                       absl::StrCat("--max_num_batched_tokens=",
                                    absl::GetFlag(FLAGS_max_num_batched_tokens)),
                       absl::StrCat("--kv_overlap=", absl::GetFlag(FLAGS_kv_overlap) ? "true" : "false"),
                       "--pipeline_steps=" + absl::GetFlag(FLAGS_pipeline_steps)},
      .prefill_devices = devices[0],
      .decode_devices = devices[1],
      .log_dir = log_dir};
  std::cerr << "starting " << options.num_prefill << " prefill + " << options.num_decode
            << " decode workers and a router (logs in " << log_dir << ")\n";
  auto cluster = tandem::cli::LocalCluster::Start(options);
  if (!cluster.ok()) return Fail(cluster.status());
  std::string address = (*cluster)->router_address();
  absl::Status ready = tandem::cli::WaitForCluster(address, options.num_prefill > 0 ? 1 : 0, 1,
                                                   absl::Seconds(60));
  if (!ready.ok()) return Fail(ready);
  if (!absl::GetFlag(FLAGS_ready_file).empty()) {
    (void)tandem::WriteReadyFile(absl::GetFlag(FLAGS_ready_file), "tandem-up", address, "");
  }
  std::cout << "tandem is serving on " << address << "  (Ctrl-C stops it)\n"
            << "  try: tandem generate --server=" << address << std::endl;
  while (!tandem::WaitForShutdown(absl::Seconds(1))) {
    if (!(*cluster)->router().process->Running()) {
      std::cerr << "the router exited; stopping\n";
      break;
    }
  }
  std::cerr << "stopping the cluster\n";
  (*cluster)->Stop();
  return 0;
}

bool ParseRange(const std::string& text, int32_t& lo, int32_t& hi) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  if (parts.size() == 1) return absl::SimpleAtoi(parts[0], &lo) && absl::SimpleAtoi(parts[0], &hi);
  return parts.size() == 2 && absl::SimpleAtoi(parts[0], &lo) && absl::SimpleAtoi(parts[1], &hi);
}

int RunBench() {
  tandem::cli::BenchOptions o{.server = absl::GetFlag(FLAGS_server),
                              .num_requests = absl::GetFlag(FLAGS_requests),
                              .rate = absl::GetFlag(FLAGS_rate),
                              .poisson = absl::GetFlag(FLAGS_poisson),
                              .concurrency = absl::GetFlag(FLAGS_concurrency),
                              .ttft_slo_ms = absl::GetFlag(FLAGS_ttft_slo_ms),
                              .tpot_slo_ms = absl::GetFlag(FLAGS_tpot_slo_ms)};
  if (!ParseRange(absl::GetFlag(FLAGS_prompt_len), o.prompt_len_min, o.prompt_len_max) ||
      !ParseRange(absl::GetFlag(FLAGS_output_len), o.output_len_min, o.output_len_max)) {
    return Fail(absl::InvalidArgumentError("prompt_len and output_len must be N or MIN:MAX"));
  }
  auto report = tandem::cli::RunBench(o, std::cout);
  if (!report.ok()) return Fail(report.status());
  std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (json_out == "-") {
    std::cout << report->dump(2) << "\n";
  } else if (!json_out.empty()) {
    std::ofstream(json_out) << report->dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  std::string command = args[1];
  if (command == "generate") return RunGenerate();
  if (command == "up") return RunUp();
  if (command == "bench") return RunBench();
  std::cerr << "error: unknown command '" << command << "'\n" << kUsage << "\n";
  return 2;
}
