// The engine end to end on the CPU backend and the fixture models: batch invariance,
// preemption, prefix caching, n > 1, beams, stop handling, aborts, and the prefill/decode
// roles handing KV over.
#include "common/engine/engine.h"

#include <cstring>
#include <numeric>
#include <thread>

#include "common/backend/cpu/cpu_model_runner.h"
#include "common/kv_cache/block_hash.h"
#include "common/sampling/selection.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/collecting_sink.h"
#include "tests/testing/fixtures.h"

namespace tandem {
namespace {

using ::tandem::testing::CollectingSink;
using ::testing::HasSubstr;

struct Fixture {
  std::string model;
  nlohmann::json golden;
  std::shared_ptr<const Tokenizer> tokenizer;
  bool pipeline = false;  // EngineOptions::pipeline_steps of the engines MakeEngine makes
};

Fixture LoadFixture(const std::string& model) {
  Fixture f{.model = model, .golden = testing::ReadJsonFixture("models/" + model + "/golden.json")};
  auto tokenizer = Tokenizer::Load(testing::FixturePath("models/" + model));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  f.tokenizer = std::move(*tokenizer);
  return f;
}

std::unique_ptr<Engine> MakeEngine(const Fixture& f, int64_t num_blocks,
                                   EngineRole role = EngineRole::kColocated,
                                   SchedulerOptions scheduler = {},
                                   CpuModelRunner** raw_runner = nullptr) {
  auto runner = CpuModelRunner::Load(testing::FixturePath("models/" + f.model),
                                     {.num_kv_blocks = num_blocks, .block_size_tokens = 16,
                                      .num_threads = 2});
  EXPECT_TRUE(runner.ok()) << runner.status();
  if (raw_runner) *raw_runner = runner->get();
  return std::make_unique<Engine>(
      EngineOptions{.role = role, .scheduler = scheduler, .pipeline_steps = f.pipeline},
      std::move(*runner), f.tokenizer);
}

EngineRequest Greedy(const std::string& id, std::vector<int32_t> prompt, int32_t max_tokens,
                     std::shared_ptr<OutputSink> sink) {
  EngineRequest r{.request_id = id, .prompt_ids = std::move(prompt), .sink = std::move(sink)};
  r.params.temperature = 0.0f;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

void RunToCompletion(Engine& engine) {
  for (int i = 0; i < 100000 && engine.Step(); ++i) {
  }
}

std::vector<int32_t> Prompt(const Fixture& f, size_t i) {
  return f.golden["prompts"][i]["ids"].get<std::vector<int32_t>>();
}
std::vector<int32_t> Reference(const Fixture& f, size_t i, size_t n) {
  std::vector<int32_t> g = f.golden["prompts"][i]["greedy"].get<std::vector<int32_t>>();
  return {g.begin(), g.begin() + n};
}

// Every test runs on both fixtures, with synchronous and with pipelined decode steps (the
// CPU runner supports fed tokens; only device runners pipeline by default).
class EngineTest : public ::testing::TestWithParam<std::tuple<std::string, bool>> {
 protected:
  void SetUp() override {
    f_ = LoadFixture(std::get<0>(GetParam()));
    f_.pipeline = std::get<1>(GetParam());
  }
  size_t num_prompts() const { return f_.golden["prompts"].size(); }
  Fixture f_;
};

// 32 concurrent greedy requests of different prompt and output lengths produce exactly the
// reference continuation each produces alone.
TEST_P(EngineTest, BatchInvarianceAgainstReference) {
  auto engine = MakeEngine(f_, 512, EngineRole::kColocated,
                           {.max_num_seqs = 32, .max_num_batched_tokens = 256});
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int r = 0; r < 32; ++r) {
    sinks.push_back(std::make_shared<CollectingSink>());
    int32_t max_tokens = 8 + (r * 7) % 25;
    ASSERT_TRUE(engine->AddRequest(Greedy("r" + std::to_string(r), Prompt(f_, r % num_prompts()),
                                          max_tokens, sinks.back())).ok());
  }
  RunToCompletion(*engine);
  for (int r = 0; r < 32; ++r) {
    int32_t max_tokens = 8 + (r * 7) % 25;
    EXPECT_EQ(sinks[r]->Tokens(), Reference(f_, r % num_prompts(), max_tokens)) << "request " << r;
    ASSERT_NE(sinks[r]->Final(), nullptr);
    EXPECT_EQ(sinks[r]->Final()->finish, OutputFinish::kLength);
  }
  EngineStats stats = engine->stats();
  EXPECT_EQ(stats.num_blocks_free, stats.num_blocks_total);
  if (f_.pipeline) {
    EXPECT_GT(stats.num_pipelined_steps, 0);
  } else {
    EXPECT_EQ(stats.num_pipelined_steps, 0);
  }
}

// A pool too small for all requests at once: preemption by recompute, same tokens.
TEST_P(EngineTest, PreemptionKeepsTokensIdentical) {
  auto engine = MakeEngine(f_, 12, EngineRole::kColocated,
                           {.max_num_seqs = 16, .max_num_batched_tokens = 512});
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (size_t p = 0; p < num_prompts(); ++p) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->AddRequest(Greedy("r" + std::to_string(p), Prompt(f_, p), 32,
                                          sinks.back())).ok());
  }
  RunToCompletion(*engine);
  EXPECT_GT(engine->stats().num_preemptions, 0);
  for (size_t p = 0; p < num_prompts(); ++p) EXPECT_EQ(sinks[p]->Tokens(), Reference(f_, p, 32));
  EXPECT_EQ(engine->stats().num_blocks_free, 12);
}

// A second request sharing a long prefix computes only its new tokens.
TEST_P(EngineTest, PrefixCacheComputesOnlyNewTokens) {
  auto engine = MakeEngine(f_, 64);
  std::vector<int32_t> prompt = Prompt(f_, num_prompts() - 1);  // the long prompt
  auto first = std::make_shared<CollectingSink>(), second = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->AddRequest(Greedy("a", prompt, 4, first)).ok());
  RunToCompletion(*engine);
  int64_t computed_before = engine->stats().num_computed_tokens;
  ASSERT_TRUE(engine->AddRequest(Greedy("b", prompt, 4, second)).ok());
  RunToCompletion(*engine);
  int64_t cached = (static_cast<int64_t>(prompt.size()) - 1) / 16 * 16;
  EXPECT_EQ(second->Final()->num_cached_tokens, cached);
  // prompt minus the cached blocks, plus 3 decode steps (the 4th token needs no forward)
  EXPECT_EQ(engine->stats().num_computed_tokens - computed_before,
            static_cast<int64_t>(prompt.size()) - cached + 3);
  EXPECT_EQ(second->Tokens(), first->Tokens());
  EXPECT_EQ(first->Tokens(), Reference(f_, num_prompts() - 1, 4));
  // The prefix-cache summary a router scores workers by holds the prompt's first block.
  for (int i = 0; i < 16; ++i) engine->Step();
  std::vector<uint64_t> hashes = engine->stats().cached_block_hashes;
  uint64_t first_block =
      HashBlockTokens(kRootBlockHash, std::span(prompt).subspan(0, 16)).lo;
  EXPECT_NE(std::find(hashes.begin(), hashes.end(), first_block), hashes.end());
}

// n > 1: each sample is reproducible and independent of the batch; samples differ.
TEST_P(EngineTest, ParallelSamplesAreSeededAndForkedCopyOnWrite) {
  auto run = [&](bool with_neighbours) {
    auto engine = MakeEngine(f_, 128);
    auto sink = std::make_shared<CollectingSink>();
    EngineRequest r{.request_id = "n", .prompt_ids = Prompt(f_, 1), .seed = 1234, .sink = sink};
    r.params.n = 3;
    r.params.temperature = 1.0f;
    r.params.max_tokens = 12;
    r.params.ignore_eos = true;
    EXPECT_TRUE(engine->AddRequest(r).ok());
    if (with_neighbours) {
      for (int i = 0; i < 3; ++i) {
        EXPECT_TRUE(engine->AddRequest(Greedy("g" + std::to_string(i), Prompt(f_, i), 20,
                                              std::make_shared<CollectingSink>())).ok());
      }
    }
    RunToCompletion(*engine);
    EXPECT_EQ(engine->stats().num_blocks_free, 128);
    return std::vector<std::vector<int32_t>>{sink->Tokens(0), sink->Tokens(1), sink->Tokens(2)};
  };
  std::vector<std::vector<int32_t>> alone = run(false), crowded = run(true);
  EXPECT_EQ(alone, crowded);
  for (const auto& sample : alone) EXPECT_EQ(sample.size(), 12u);
  EXPECT_FALSE(alone[0] == alone[1] && alone[1] == alone[2]);
}

TEST_P(EngineTest, BeamSearchMatchesTransformers) {
  nlohmann::json cases = testing::ReadJsonFixture("sampling/beam_search.json")[f_.model];
  auto engine = MakeEngine(f_, 256);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    auto sink = std::make_shared<CollectingSink>();
    sinks.push_back(sink);
    EngineRequest r = Greedy("beam" + std::to_string(i), c["prompt_ids"], c["max_new_tokens"], sink);
    r.params.num_beams = c["num_beams"];
    r.params.num_return_sequences = c["num_beams"];
    r.params.length_penalty = c["length_penalty"];
    r.params.early_stopping = c["early_stopping"].is_string() ? EarlyStopping::kNever
                              : c["early_stopping"].get<bool>() ? EarlyStopping::kEager
                                                                 : EarlyStopping::kHeuristic;
    r.params.stop_token_ids = {c["eos_token_id"].get<int32_t>()};
    ASSERT_TRUE(engine->AddRequest(r).ok());
  }
  RunToCompletion(*engine);  // all 9 searches interleaved in one batch
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    int32_t eos = c["eos_token_id"];
    for (size_t h = 0; h < c["sequences"].size(); ++h) {
      std::vector<int32_t> want = c["sequences"][h].get<std::vector<int32_t>>();
      auto first_eos = std::find(want.begin(), want.end(), eos);
      if (first_eos != want.end()) want.erase(first_eos + 1, want.end());
      EXPECT_EQ(sinks[i]->Tokens(static_cast<int32_t>(h)), want) << "case " << i << " beam " << h;
      ASSERT_NE(sinks[i]->Final(static_cast<int32_t>(h)), nullptr);
      EXPECT_NEAR(sinks[i]->Final(static_cast<int32_t>(h))->score, c["scores"][h].get<double>(), 1e-4);
    }
  }
  EXPECT_EQ(engine->stats().num_blocks_free, 256);
}

TEST_P(EngineTest, StreamedTextEqualsDecodedTokensAndStopsOnStrings) {
  auto engine = MakeEngine(f_, 64);
  auto sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(engine->AddRequest(Greedy("t", Prompt(f_, 0), 32, sink)).ok());
  RunToCompletion(*engine);
  std::string full = sink->Text();
  EXPECT_EQ(full, f_.golden["prompts"][0]["greedy_text"].get<std::string>().substr(0, full.size()));
  ASSERT_GT(full.size(), 12u);
  // Stop on a string from the middle of that text: output ends just before it.
  std::string stop = full.substr(full.size() / 2, 4);
  auto stopped = std::make_shared<CollectingSink>();
  EngineRequest r = Greedy("s", Prompt(f_, 0), 32, stopped);
  r.params.stop = {stop};
  ASSERT_TRUE(engine->AddRequest(r).ok());
  RunToCompletion(*engine);
  ASSERT_NE(stopped->Final(), nullptr);
  EXPECT_EQ(stopped->Final()->finish, OutputFinish::kStop);
  EXPECT_EQ(stopped->Final()->stop, stop);
  EXPECT_EQ(stopped->Text(), full.substr(0, full.find(stop)));
}

// Pipelined steps feed each sequence its token on the runner's side and collect the
// tokens a step later: every stream must equal the synchronous one, token for token, with
// stop strings ending sequences mid-flight, penalties and seeded draws (whose state must
// include the token collected just before), logprobs, n > 1 forks, a beam search beside
// them, requests arriving while others decode, and aborts; no block is left behind.
TEST_P(EngineTest, PipelinedStepsEqualSynchronousSteps) {
  // The test compares both modes itself; the parameter picks the arrival pattern.
  const int first_wave = f_.pipeline ? 10 : 5;
  std::string greedy_text = f_.golden["prompts"][2 % num_prompts()]["greedy_text"];
  auto run = [&](bool pipeline) {
    Fixture f = f_;
    f.pipeline = pipeline;
    auto engine = MakeEngine(f, 96, EngineRole::kColocated,
                             {.max_num_seqs = 16, .max_num_batched_tokens = 64});
    std::vector<EngineRequest> requests;
    for (int i = 0; i < 10; ++i) {
      EngineRequest r = Greedy("r" + std::to_string(i), Prompt(f_, i % num_prompts()),
                               6 + 5 * i, std::make_shared<CollectingSink>());
      r.seed = 1000 + i;
      if (i % 2 == 1) {
        r.params.temperature = 0.9f;
        r.params.top_p = 0.95f;
        r.params.repetition_penalty = 1.3f;
        r.params.presence_penalty = 0.5f;
        r.params.frequency_penalty = 0.3f;
      }
      if (i % 3 == 0) r.params.logprobs = 3;
      if (i == 2) r.params.stop = {greedy_text.substr(greedy_text.size() / 5, 3)};
      if (i == 4) r.params.ignore_eos = false;
      if (i == 5) r.params.n = 2;
      if (i == 8) {  // running beams keep every step synchronous: a short search
        r.params.num_beams = 2;
        r.params.max_tokens = 5;
      }
      requests.push_back(r);
    }
    std::vector<std::shared_ptr<CollectingSink>> sinks;
    for (const EngineRequest& r : requests) {
      sinks.push_back(std::static_pointer_cast<CollectingSink>(r.sink));
    }
    // Some at once, the rest while those decode; one aborted mid-stream.
    for (int i = 0; i < first_wave; ++i) {
      EXPECT_EQ(engine->AddRequest(requests[i]), absl::OkStatus());
    }
    for (int step = 0; step < 6; ++step) engine->Step();
    for (int i = first_wave; i < 10; ++i) {
      EXPECT_EQ(engine->AddRequest(requests[i]), absl::OkStatus());
    }
    for (int step = 0; step < 4; ++step) engine->Step();
    engine->Abort("r9");
    RunToCompletion(*engine);
    EngineStats stats = engine->stats();
    EXPECT_EQ(stats.num_blocks_free, stats.num_blocks_total) << "pipeline " << pipeline;
    EXPECT_EQ(stats.num_pipelined_steps > 0, pipeline);
    return std::make_pair(sinks, stats.num_steps);
  };
  auto [sync, sync_steps] = run(false);
  auto [piped, piped_steps] = run(true);
  // The aborted request got its tokens up to the abort, which the pipelined engine collects
  // a step later: one stream is the start of the other.
  std::vector<int32_t> a9 = sync[9]->Tokens(), b9 = piped[9]->Tokens();
  const size_t common = std::min(a9.size(), b9.size());
  EXPECT_GT(common, 0u);
  EXPECT_TRUE(std::equal(a9.begin(), a9.begin() + common, b9.begin()));
  ASSERT_NE(piped[9]->Final(), nullptr);
  EXPECT_EQ(piped[9]->Final()->finish, OutputFinish::kAbort);
  for (size_t i = 0; i + 1 < sync.size(); ++i) {
    ASSERT_EQ(piped[i]->outputs.size(), sync[i]->outputs.size()) << "request " << i;
    for (size_t k = 0; k < sync[i]->outputs.size(); ++k) {
      const EngineOutput& a = sync[i]->outputs[k];
      const EngineOutput& b = piped[i]->outputs[k];
      SCOPED_TRACE(::testing::Message() << "request " << i << " output " << k);
      EXPECT_EQ(b.index, a.index);
      EXPECT_EQ(b.token_ids, a.token_ids);
      EXPECT_EQ(b.text, a.text);
      EXPECT_EQ(b.finish, a.finish);
      EXPECT_EQ(b.stop, a.stop);
      EXPECT_EQ(b.num_output_tokens, a.num_output_tokens);
      ASSERT_EQ(b.logprobs.size(), a.logprobs.size());
      for (size_t t = 0; t < a.logprobs.size(); ++t) {
        EXPECT_EQ(b.logprobs[t].chosen.token_id, a.logprobs[t].chosen.token_id);
        EXPECT_EQ(b.logprobs[t].chosen.logprob, a.logprobs[t].chosen.logprob);
        ASSERT_EQ(b.logprobs[t].top.size(), a.logprobs[t].top.size());
      }
    }
  }
  ASSERT_NE(sync[2]->Final(), nullptr);
  EXPECT_EQ(sync[2]->Final()->finish, OutputFinish::kStop);  // the stop string ended it
  ASSERT_NE(sync[9]->Final(), nullptr);
  EXPECT_EQ(sync[9]->Final()->finish, OutputFinish::kAbort);
  // A pipelined step is a collection plus the next launch: the same number of steps, plus
  // the one that collects the last tokens.
  EXPECT_LE(piped_steps, sync_steps + 1);
}

TEST_P(EngineTest, InvalidRequestsAreRejectedByField) {
  auto engine = MakeEngine(f_, 8);
  auto sink = std::make_shared<CollectingSink>();
  EXPECT_THAT(std::string(engine->AddRequest(Greedy("a", {}, 4, sink)).message()),
              HasSubstr("prompt must not be empty"));
  EXPECT_THAT(std::string(engine->AddRequest(Greedy("a", {1, 999999}, 4, sink)).message()),
              HasSubstr("outside the vocabulary"));
  EngineRequest r = Greedy("a", {1, 2}, 4, sink);
  r.params.top_p = 1.5f;
  EXPECT_EQ(std::string(engine->AddRequest(r).message()), "top_p must be in (0, 1], got 1.5");
  EXPECT_THAT(std::string(engine->AddRequest(Greedy("a", {1, 2}, 500, sink)).message()),
              HasSubstr("KV blocks"));
  EXPECT_THAT(std::string(engine->AddRequest(
                  Greedy("a", std::vector<int32_t>(5000, 1), 4, sink)).message()),
              HasSubstr("context"));
}

// Abort from another thread while the engine thread runs: everything is freed.
TEST_P(EngineTest, AbortFromAnyThreadFreesEverything) {
  auto engine = MakeEngine(f_, 64);
  engine->Start();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 6; ++i) {
    sinks.push_back(std::make_shared<CollectingSink>());
    ASSERT_TRUE(engine->AddRequest(Greedy("a" + std::to_string(i), Prompt(f_, i % num_prompts()),
                                          200, sinks.back())).ok());
  }
  std::thread aborter([&] {
    for (int i = 0; i < 6; ++i) engine->Abort("a" + std::to_string(i));
  });
  aborter.join();
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    EngineStats s = engine->stats();
    if (s.num_running == 0 && s.num_waiting == 0 && s.num_blocks_free == 64) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  engine->Stop();
  EXPECT_EQ(engine->stats().num_blocks_free, 64);
  for (auto& sink : sinks) {
    std::lock_guard<std::mutex> lock(sink->mu);
    ASSERT_FALSE(sink->outputs.empty());
    EXPECT_EQ(sink->outputs.back().finish, OutputFinish::kAbort);
    EXPECT_TRUE(absl::IsCancelled(sink->outputs.back().status));
  }
}

// Disaggregation inside one process: a prefill-only engine computes the prompt and the first
// token, its KV blocks are copied into a decode-only engine's reservation, and the decode
// engine continues: the tokens equal the reference.
TEST_P(EngineTest, PrefillAndDecodeRolesHandOverKv) {
  CpuModelRunner* p_runner = nullptr;
  CpuModelRunner* d_runner = nullptr;
  auto prefill = MakeEngine(f_, 32, EngineRole::kPrefillOnly, {}, &p_runner);
  auto decode = MakeEngine(f_, 32, EngineRole::kDecodeOnly, {}, &d_runner);
  std::vector<int32_t> prompt = Prompt(f_, num_prompts() - 1);
  auto p_sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(prefill->AddRequest(Greedy("x", prompt, 16, p_sink)).ok());
  RunToCompletion(*prefill);  // stops stepping work once held: the record stays live
  // The hand-off comes before the forward pass that writes the KV (its progress says when
  // each layer is written), the first token after it.
  ASSERT_EQ(p_sink->outputs.size(), 2u);
  const EngineOutput& handoff = p_sink->outputs[0];
  EXPECT_EQ(handoff.kv_num_tokens, static_cast<int64_t>(prompt.size()));
  EXPECT_TRUE(handoff.token_ids.empty());
  ASSERT_NE(handoff.kv_progress, nullptr);
  EXPECT_TRUE(handoff.kv_progress->WaitForComplete(absl::Now()).ok());
  const EngineOutput& first = p_sink->outputs[1];
  EXPECT_TRUE(first.kv_blocks.empty());
  ASSERT_EQ(first.token_ids.size(), 1u);
  EXPECT_EQ(first.token_ids[0], Reference(f_, num_prompts() - 1, 1)[0]);
  EXPECT_LT(prefill->stats().num_blocks_free, 32);  // pinned until ReleaseHold

  Reservation reservation;
  decode->Reserve("x", handoff.kv_num_tokens, absl::Now() + absl::Seconds(30),
                  [&](Reservation r) { reservation = std::move(r); });
  decode->Step();
  ASSERT_TRUE(reservation.status.ok()) << reservation.status;
  ASSERT_EQ(reservation.blocks.size(), handoff.kv_blocks.size());
  const int64_t block_floats = 16 * d_runner->kv_layout().ElementsPerTokenPerLayer();
  for (int64_t layer = 0; layer < d_runner->config().num_layers; ++layer) {
    reference::LayerKv src = p_runner->layer_kv(layer), dst = d_runner->layer_kv(layer);
    for (size_t b = 0; b < reservation.blocks.size(); ++b) {
      std::memcpy(dst.k + reservation.blocks[b] * block_floats, src.k + handoff.kv_blocks[b] * block_floats, block_floats * 4);
      std::memcpy(dst.v + reservation.blocks[b] * block_floats, src.v + handoff.kv_blocks[b] * block_floats, block_floats * 4);
    }
  }
  prefill->ReleaseHold("x");
  prefill->Step();
  EXPECT_EQ(prefill->stats().num_blocks_free, 32);

  auto d_sink = std::make_shared<CollectingSink>();
  ASSERT_TRUE(decode->StartDecode(Greedy("x", prompt, 16, d_sink), first.token_ids[0],
                                  std::nullopt).ok());
  RunToCompletion(*decode);
  EXPECT_EQ(d_sink->Tokens(), Reference(f_, num_prompts() - 1, 16));
  EXPECT_EQ(decode->stats().num_blocks_free, 32);
}

// After the hand-off the transfer may be reading the blocks: an abort (or a passed request
// deadline) ends the request but keeps them pinned until the holder's ReleaseHold; Stop
// releases everything.
TEST_P(EngineTest, PrefillHoldSurvivesAbortUntilReleased) {
  auto prefill = MakeEngine(f_, 32, EngineRole::kPrefillOnly);
  auto sink = std::make_shared<CollectingSink>();
  EngineRequest request = Greedy("held", Prompt(f_, 0), 8, sink);
  request.deadline = absl::Now() + absl::Milliseconds(300);
  ASSERT_TRUE(prefill->AddRequest(std::move(request)).ok());
  RunToCompletion(*prefill);
  ASSERT_EQ(sink->outputs.size(), 2u);
  const int32_t held = 32 - prefill->stats().num_blocks_free;
  EXPECT_GT(held, 0);
  absl::SleepFor(absl::Milliseconds(400));  // past the request deadline: not expired
  prefill->Step();
  EXPECT_EQ(prefill->stats().num_blocks_free, 32 - held);
  prefill->Abort("held", absl::InternalError("boom"));
  prefill->Step();
  ASSERT_EQ(sink->outputs.size(), 3u);
  EXPECT_EQ(sink->outputs.back().finish, OutputFinish::kAbort);
  EXPECT_EQ(prefill->stats().num_blocks_free, 32 - held);  // still pinned
  prefill->ReleaseHold("held");
  prefill->Step();
  EXPECT_EQ(prefill->stats().num_blocks_free, 32);

  auto again = std::make_shared<CollectingSink>();
  ASSERT_TRUE(prefill->AddRequest(Greedy("held2", Prompt(f_, 1), 8, again)).ok());
  RunToCompletion(*prefill);
  ASSERT_EQ(again->outputs.size(), 2u);
  EXPECT_LT(prefill->stats().num_blocks_free, 32);
  prefill->Stop();  // releases holds
  prefill->Step();  // refreshes the stats
  EXPECT_EQ(prefill->stats().num_blocks_free, 32);
}

TEST_P(EngineTest, ExpiredReservationIsFreed) {
  auto decode = MakeEngine(f_, 16, EngineRole::kDecodeOnly);
  Reservation reservation;
  decode->Reserve("late", 20, absl::Now() - absl::Seconds(10), [&](Reservation r) { reservation = r; });
  decode->Step();
  ASSERT_TRUE(reservation.status.ok());
  decode->Step();  // past lease + grace: freed
  EXPECT_EQ(decode->stats().num_blocks_free, 16);
  // Reserving more than the pool is RESOURCE_EXHAUSTED.
  decode->Reserve("big", 16 * 17, absl::Now() + absl::Seconds(1), [&](Reservation r) { reservation = r; });
  decode->Step();
  EXPECT_TRUE(absl::IsResourceExhausted(reservation.status));
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineTest,
                         ::testing::Combine(::testing::Values("llama3-tiny", "llama2-tiny"),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           std::string name = std::get<0>(info.param);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name + (std::get<1>(info.param) ? "_pipelined" : "_synchronous");
                         });

}  // namespace
}  // namespace tandem
