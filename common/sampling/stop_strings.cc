#include "common/sampling/stop_strings.h"

#include <algorithm>

namespace tandem {
namespace {

// Length of the longest tail of `text` that is a proper prefix of some stop string.
size_t PendingPrefixLength(std::string_view text, std::span<const std::string> stops) {
  size_t best = 0;
  for (const std::string& stop : stops) {
    size_t max_len = std::min(text.size(), stop.size() - 1);
    for (size_t len = max_len; len > best; --len) {
      if (text.substr(text.size() - len) == std::string_view(stop).substr(0, len)) {
        best = len;
        break;
      }
    }
  }
  return best;
}

}  // namespace

StopStringMatch MatchStopStrings(std::string& held_text, std::span<const std::string> stops,
                                 std::string_view new_text, bool include_stop) {
  held_text.append(new_text);
  StopStringMatch out;
  size_t first = std::string::npos;
  for (const std::string& stop : stops) {
    size_t at = held_text.find(stop);
    if (at < first || (at == first && at != std::string::npos && stop.size() > out.stop.size())) {
      first = at;
      out.stop = stop;
    }
  }
  if (first != std::string::npos) {
    out.matched = true;
    out.released = held_text.substr(0, include_stop ? first + out.stop.size() : first);
    held_text.clear();
    return out;
  }
  size_t keep = PendingPrefixLength(held_text, stops);
  out.released = held_text.substr(0, held_text.size() - keep);
  held_text.erase(0, held_text.size() - keep);
  return out;
}

}  // namespace tandem
