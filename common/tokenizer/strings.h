// String helpers for the tokenizer. Debian's Abseil is built with its own absl::string_view
// (not std::string_view), so absl::StrCat and absl hash-map lookups do not accept
// std::string_view; these small equivalents do.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace tandem::tokenizer {

inline void AppendPiece(std::string& out, std::string_view s) { out.append(s); }
inline void AppendPiece(std::string& out, const char* s) { out.append(s); }
template <class T>
  requires std::is_integral_v<T> && (!std::is_same_v<T, char>) && (!std::is_same_v<T, bool>)
void AppendPiece(std::string& out, T value) {
  out.append(std::to_string(value));
}

// Concatenates strings and integers.
template <class... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (AppendPiece(out, args), ...);
  return out;
}

// Hash and equality that let a std::string-keyed map be probed with a std::string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const {
    return absl::Hash<absl::string_view>{}(absl::string_view(s.data(), s.size()));
  }
};
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};

template <class V>
using StringMap = absl::flat_hash_map<std::string, V, StringHash, StringEq>;

}  // namespace tandem::tokenizer
