// Thousands of random add / chunked prefill / decode / register / fork / free / abort / pin
// operations against a shadow model of the KV bytes. After every operation:
//  - CheckInvariants() is OK;
//  - every slot a live sequence has computed holds the KV of exactly that sequence's prefix
//    (simulated as a fingerprint of tokens [0, position]): this catches a block reused while
//    in use, a missing copy-on-write, and any prefix-cache hit whose content differs;
//  - every pinned slot still holds what it held when pinned.
// It ends with every block free.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "common/kv_cache/block_manager.h"

namespace tandem {
namespace {

constexpr int32_t kBlockSize = 4;
constexpr int32_t kNumBlocks = 48;
constexpr int kNumOps = 6000;

uint64_t Fingerprint(uint64_t prefix, int32_t token) {
  uint64_t x = prefix * 0x9e3779b97f4a7c15ULL + static_cast<uint32_t>(token) + 1;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct ShadowSeq {
  std::vector<int32_t> tokens;
  std::vector<uint64_t> fingerprints;  // [tokens.size()]: of tokens [0, i]
  int64_t num_computed = 0;            // == the manager's num_tokens: KV written right away

  void Append(int32_t token) {
    fingerprints.push_back(Fingerprint(fingerprints.empty() ? 0 : fingerprints.back(), token));
    tokens.push_back(token);
  }
};

struct PinRecord {
  std::vector<BlockId> blocks;
  std::map<int32_t, uint64_t> slots;  // computed slots at pin time and their KV
};

struct Counters {
  int64_t hit_tokens = 0, cow_copies = 0, no_fit = 0, evictions = 0, forks = 0, pins = 0;
};

class StressRun {
 public:
  StressRun(BlockHashFn hash_fn, uint32_t seed)
      : m_(BlockManagerOptions{
            .num_blocks = kNumBlocks, .block_size_tokens = kBlockSize, .hash_fn = hash_fn}),
        rng_(seed),
        kv_(static_cast<size_t>(kNumBlocks * kBlockSize), 0) {
    for (auto& family : families_) {
      for (int i = 0; i < 24; ++i) family.push_back(Token());
    }
  }

  void Step() {
    const int op = Uniform(100);
    if (op < 22) {
      AddSequence();
    } else if (op < 55) {
      Advance(RandomSeq());
    } else if (op < 63) {
      Register(RandomSeq());
    } else if (op < 71) {
      Fork(RandomSeq());
    } else if (op < 81) {
      Free(RandomSeq(), /*abort=*/false);
    } else if (op < 87) {
      Free(RandomSeq(), /*abort=*/true);
    } else if (op < 93) {
      Pin(RandomSeq());
    } else {
      Unpin();
    }
  }

  void Verify() {
    const absl::Status status = m_.CheckInvariants();
    ASSERT_TRUE(status.ok()) << status;
    for (const auto& [id, s] : seqs_) {
      ASSERT_EQ(m_.num_tokens(id), s.num_computed) << "seq " << id;
      for (int64_t pos = 0; pos < s.num_computed; ++pos) {
        ASSERT_EQ(kv_[static_cast<size_t>(m_.Slot(id, pos))], s.fingerprints[pos])
            << "seq " << id << " position " << pos << " reads another sequence's KV";
      }
    }
    for (const PinRecord& pin : pins_) {
      for (const auto& [slot, value] : pin.slots) {
        ASSERT_EQ(kv_[static_cast<size_t>(slot)], value) << "pinned slot " << slot << " reused";
      }
    }
  }

  void FreeEverything() {
    while (!seqs_.empty()) Free(seqs_.begin()->first, /*abort=*/false);
    while (!pins_.empty()) Unpin();
  }

  const BlockManager& manager() const { return m_; }
  const Counters& counters() const { return counters_; }

 private:
  int Uniform(int n) { return static_cast<int>(rng_() % static_cast<uint32_t>(n)); }
  int32_t Token() { return Uniform(50); }  // a small vocabulary: equal blocks happen

  SeqId RandomSeq() {
    if (seqs_.empty()) return -1;
    auto it = seqs_.begin();
    std::advance(it, Uniform(static_cast<int>(seqs_.size())));
    return it->first;
  }

  // A prompt = a prefix of one of 4 shared "system prompts" + a random suffix.
  void AddSequence() {
    ShadowSeq s;
    const std::vector<int32_t>& family = families_[static_cast<size_t>(Uniform(4))];
    const int prefix_len = Uniform(25);
    for (int i = 0; i < prefix_len; ++i) s.Append(family[static_cast<size_t>(i)]);
    for (int i = Uniform(8) + 1; i > 0; --i) s.Append(Token());
    const SeqId id = next_id_++;
    const int64_t cached = m_.CountCachedPrefixTokens(s.tokens);
    const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - cached;
    std::optional<AllocationPlan> plan = m_.PlanAllocate(id, s.tokens, 1 + Uniform(remaining));
    if (!plan) {
      ++counters_.no_fit;
      return;
    }
    ASSERT_EQ(plan->num_cached_tokens, cached);
    ASSERT_LT(plan->num_cached_tokens, static_cast<int64_t>(s.tokens.size()));
    counters_.hit_tokens += plan->num_cached_tokens;
    s.num_computed = cached;  // the hit's KV is checked against these tokens by Verify()
    seqs_[id] = s;
    Apply(id, *plan);
  }

  // The next prefill chunk, or one decode token once the prompt is computed.
  void Advance(SeqId id) {
    if (id < 0) return;
    ShadowSeq& s = seqs_[id];
    int64_t num_new = static_cast<int64_t>(s.tokens.size()) - s.num_computed;
    if (num_new == 0) {
      if (s.tokens.size() >= 48) return;
      s.Append(Token());  // sampled last step
      num_new = 1;
    } else {
      num_new = 1 + Uniform(static_cast<int>(num_new));
    }
    std::optional<AllocationPlan> plan = m_.PlanAllocate(id, s.tokens, num_new);
    if (!plan) {
      ++counters_.no_fit;
      return;
    }
    Apply(id, *plan);
  }

  // Commit, then do what the runner would: the copy, then write the new tokens' KV.
  void Apply(SeqId id, const AllocationPlan& plan) {
    for (BlockId b : plan.new_blocks) counters_.evictions += m_.pool().is_cached(b) ? 1 : 0;
    m_.Commit(plan);
    if (plan.copy_on_write) {
      ++counters_.cow_copies;
      for (int32_t i = 0; i < kBlockSize; ++i) {
        kv_[static_cast<size_t>(plan.copy_on_write->dst * kBlockSize + i)] =
            kv_[static_cast<size_t>(plan.copy_on_write->src * kBlockSize + i)];
      }
    }
    ShadowSeq& s = seqs_[id];
    for (int64_t pos = plan.first_new_position; pos < plan.first_new_position + plan.num_new_tokens;
         ++pos) {
      kv_[static_cast<size_t>(m_.Slot(id, pos))] = s.fingerprints[static_cast<size_t>(pos)];
    }
    s.num_computed = plan.first_new_position + plan.num_new_tokens;
    if (Uniform(3) != 0) Register(id);  // sometimes registration lags a step
  }

  void Register(SeqId id) {
    if (id < 0) return;
    const ShadowSeq& s = seqs_[id];
    m_.RegisterComputedTokens(id, s.tokens, s.num_computed);
  }

  void Fork(SeqId parent) {
    if (parent < 0) return;
    const SeqId child = next_id_++;
    m_.Fork(parent, child);
    seqs_[child] = seqs_[parent];
    ++counters_.forks;
  }

  void Free(SeqId id, bool abort) {
    if (id < 0) return;
    abort ? m_.Abort(id) : m_.Free(id);
    if (Uniform(4) == 0) m_.Free(id);  // cleanup may run twice
    seqs_.erase(id);
  }

  void Pin(SeqId id) {
    if (id < 0) return;
    PinRecord pin;
    std::span<const BlockId> table = m_.block_table(id);
    pin.blocks.assign(table.begin(), table.end());
    for (int64_t pos = 0; pos < seqs_[id].num_computed; ++pos) {
      const int32_t slot = m_.Slot(id, pos);
      pin.slots[slot] = kv_[static_cast<size_t>(slot)];
    }
    m_.Pin(pin.blocks);
    pins_.push_back(std::move(pin));
    ++counters_.pins;
  }

  void Unpin() {
    if (pins_.empty()) return;
    const size_t i = static_cast<size_t>(Uniform(static_cast<int>(pins_.size())));
    m_.Unpin(pins_[i].blocks);
    pins_.erase(pins_.begin() + static_cast<std::ptrdiff_t>(i));
  }

  BlockManager m_;
  std::mt19937 rng_;
  std::vector<uint64_t> kv_;  // [num_blocks * block_size] simulated KV per slot
  std::vector<int32_t> families_[4];
  std::map<SeqId, ShadowSeq> seqs_;
  std::vector<PinRecord> pins_;
  SeqId next_id_ = 0;
  Counters counters_;
};

struct Expect {
  int64_t min_hit_tokens = 0;
  int64_t min_evictions = 0;
};

void RunStress(BlockHashFn hash_fn, uint32_t seed, Expect expect) {
  StressRun run(hash_fn, seed);
  for (int op = 0; op < kNumOps; ++op) {
    run.Step();
    run.Verify();
    if (::testing::Test::HasFatalFailure()) {
      ADD_FAILURE() << "at op " << op;
      return;
    }
  }
  run.FreeEverything();
  run.Verify();
  EXPECT_EQ(run.manager().num_blocks_free(), kNumBlocks);
  EXPECT_EQ(run.manager().num_seqs(), 0);
  // The run exercised what it claims to.
  const Counters& c = run.counters();
  EXPECT_GT(c.hit_tokens, expect.min_hit_tokens);
  EXPECT_GT(c.cow_copies, 20);
  EXPECT_GT(c.no_fit, 20);
  EXPECT_GT(c.evictions, expect.min_evictions);
  EXPECT_GT(c.forks, 100);
  EXPECT_GT(c.pins, 100);
  EXPECT_EQ(run.manager().stats().prefix_cache_hit_tokens, c.hit_tokens);
  std::printf("hit tokens %lld, copies %lld, no-fit %lld, evictions %lld\n",
              static_cast<long long>(c.hit_tokens), static_cast<long long>(c.cow_copies),
              static_cast<long long>(c.no_fit), static_cast<long long>(c.evictions));
}

TEST(BlockManagerStressTest, RandomOperationsKeepInvariantsAndEndAllFree) {
  RunStress(&HashBlockTokens, /*seed=*/20240601, {.min_hit_tokens = 2000, .min_evictions = 200});
}

BlockHash CollideEverything(const BlockHash&, std::span<const int32_t>) { return {7, 7}; }

TEST(BlockManagerStressTest, EveryKeyCollidingStillNeverServesWrongKv) {
  // One cache entry at a time: few hits and evictions, but every lookup collides.
  RunStress(&CollideEverything, /*seed=*/7, {.min_hit_tokens = 100, .min_evictions = 0});
}

}  // namespace
}  // namespace tandem
