#include "common/sampling/selection.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "common/logging.h"

namespace tandem {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

double UniformForPosition(uint64_t seed, int64_t position) {
  uint64_t bits = SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(position));
  return static_cast<double>(bits >> 11) * 0x1p-53;
}

uint64_t SampleSeed(uint64_t seed, int32_t sample_index) {
  if (sample_index == 0) return seed;
  // A different odd constant from UniformForPosition's mixing, so sample seeds do not line
  // up with positions of the base seed.
  return SplitMix64(SplitMix64(seed ^ 0xd1b54a32d192ed03ull) + static_cast<uint64_t>(sample_index));
}

uint64_t ResolveSeed(const SamplingParams& params) {
  if (params.seed) return *params.seed;
  std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

int32_t ArgMax(std::span<const float> row) {
  TANDEM_CHECK(!row.empty());
  return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
}

int32_t DrawFromLogits(std::span<const float> row, double u) {
  float max_logit = row[ArgMax(row)];
  TANDEM_CHECK(std::isfinite(max_logit)) << "no finite logit to draw from";
  double total = 0.0;
  for (float value : row) total += std::exp(static_cast<double>(value - max_logit));
  double target = u * total;
  int32_t last_kept = 0;
  for (size_t i = 0; i < row.size(); ++i) {
    if (row[i] == -INFINITY) continue;
    target -= std::exp(static_cast<double>(row[i] - max_logit));
    last_kept = static_cast<int32_t>(i);
    if (target < 0.0) return last_kept;
  }
  return last_kept;  // rounding left a sliver of mass: the last kept token takes it
}

}  // namespace tandem
