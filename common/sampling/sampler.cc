#include "common/sampling/sampler.h"

#include <algorithm>
#include <cmath>

#include "common/logging.h"

namespace tandem {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

int32_t ArgMax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// Keeps the candidates (sorted by descending logit) that survive top-k and top-p, as
// probabilities after temperature. Ties keep the lower token id first.
void Truncate(const SamplingParams& params, std::vector<std::pair<float, int32_t>>& cand) {
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < cand.size()) {
    cand.resize(params.top_k);
  }
  float max_logit = cand.front().first;
  double total = 0.0;
  for (auto& [value, id] : cand) {
    value = std::exp((value - max_logit) / params.temperature);
    total += value;
  }
  double cumulative = 0.0;
  size_t keep = cand.size();
  for (size_t i = 0; i < cand.size(); ++i) {
    cand[i].first = static_cast<float>(cand[i].first / total);
    cumulative += cand[i].first;
    if (params.top_p < 1.0f && cumulative >= params.top_p) {
      keep = i + 1;  // the smallest prefix whose mass reaches top_p
      break;
    }
  }
  cand.resize(keep);
}

}  // namespace

double UniformForPosition(uint64_t seed, int64_t position) {
  uint64_t bits = SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(position));
  return static_cast<double>(bits >> 11) * 0x1p-53;
}

int32_t SampleToken(std::span<const float> logits, const SamplingParams& params, uint64_t seed,
                    int64_t position, std::vector<std::pair<float, int32_t>>& scratch) {
  TANDEM_CHECK(!logits.empty());
  if (params.greedy() || params.top_k == 1) return ArgMax(logits);
  scratch.clear();
  for (size_t i = 0; i < logits.size(); ++i) {
    scratch.emplace_back(logits[i], static_cast<int32_t>(i));
  }
  Truncate(params, scratch);
  double mass = 0.0;
  for (const auto& [p, id] : scratch) mass += p;
  double target = UniformForPosition(seed, position) * mass;
  for (const auto& [p, id] : scratch) {
    target -= p;
    if (target < 0.0) return id;
  }
  return scratch.back().second;
}

}  // namespace tandem
