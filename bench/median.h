// The median of benchmark samples (the upper middle one for an even count).
#pragma once

#include <algorithm>
#include <vector>

namespace tandem::bench {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace tandem::bench
