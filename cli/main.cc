// The `tandem` command. Subcommands: generate (more arrive with the cluster: up, bench).
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "cli/generate.h"

ABSL_FLAG(std::string, model, TANDEM_DEFAULT_MODEL_DIR,
          "Hugging Face model directory (default: the embedded tiny Llama-3-style model)");
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
ABSL_FLAG(int32_t, threads, 0, "CPU threads for the model, >= 0 (0: all cores)");

namespace {

constexpr char kUsage[] =
    "tandem: LLM serving with disaggregated prefill and decode.\n"
    "usage: tandem generate [--model=DIR] [--prompt=TEXT] [--max_tokens=N] [--temperature=T]\n"
    "                       [--top_k=K] [--top_p=P] [--min_p=P] [--repetition_penalty=R]\n"
    "                       [--presence_penalty=X] [--frequency_penalty=X] [--stop=A,B]\n"
    "                       [--n=N] [--num_beams=B] [--seed=S] [--ignore_eos] [--threads=N]";

int RunGenerate() {
  tandem::cli::GenerateOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  options.prompt = absl::GetFlag(FLAGS_prompt);
  options.num_threads = absl::GetFlag(FLAGS_threads);
  options.sampling.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  options.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  options.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  options.sampling.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  options.sampling.min_p = absl::GetFlag(FLAGS_min_p);
  options.sampling.repetition_penalty = absl::GetFlag(FLAGS_repetition_penalty);
  options.sampling.presence_penalty = absl::GetFlag(FLAGS_presence_penalty);
  options.sampling.frequency_penalty = absl::GetFlag(FLAGS_frequency_penalty);
  options.sampling.stop = absl::GetFlag(FLAGS_stop);
  options.sampling.n = absl::GetFlag(FLAGS_n);
  options.sampling.num_beams = absl::GetFlag(FLAGS_num_beams);
  options.sampling.num_return_sequences = options.sampling.num_beams;
  int64_t seed = absl::GetFlag(FLAGS_seed);
  if (seed < -1) {
    std::cerr << "error: seed must be >= 0 or -1, got " << seed << "\n";
    return 2;
  }
  if (seed >= 0) options.sampling.seed = static_cast<uint64_t>(seed);
  if (options.num_threads < 0) {
    std::cerr << "error: threads must be >= 0, got " << options.num_threads << "\n";
    return 2;
  }
  std::cout << options.prompt << std::flush;
  auto stats = tandem::cli::Generate(options, std::cout);
  std::cout << "\n";
  if (!stats.ok()) {
    std::cerr << "error: " << stats.status().message() << "\n";
    return stats.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::cerr << absl::StrFormat(
      "[%d prompt tokens, %d generated, finish=%s, seed=%d, prefill %.1f ms, decode %.1f "
      "tok/s]\n",
      stats->prompt_tokens, stats->generated_tokens, stats->finish_reason, stats->seed,
      stats->prefill_ms,
      stats->decode_ms > 0 ? 1000.0 * stats->generated_tokens / stats->decode_ms : 0.0);
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
  std::cerr << "error: unknown command '" << command << "'\n" << kUsage << "\n";
  return 2;
}
