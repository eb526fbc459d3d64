// Splitting a string around pattern matches, with HF's SplitDelimiterBehavior semantics.
// Used by the Split and ByteLevel pre-tokenizers and by Metaspace with split=true.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/regex.h"

namespace tandem::tokenizer {

// What happens to the matched delimiters.
enum class SplitBehavior {
  kRemoved,             // dropped
  kIsolated,            // each its own piece
  kMergedWithPrevious,  // appended to the piece before
  kMergedWithNext,      // prepended to the piece after
  kContiguous,          // adjacent pieces of the same kind merged into one piece
};

// Parses "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous".
absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name, std::string_view path);

// Byte range [begin, end) of one piece.
struct Span {
  size_t begin;
  size_t end;
};

// Splits [0, size) around `matches` (sorted, non-overlapping). With `invert` the matches are
// the pieces to keep and the gaps are the delimiters. Returns the non-empty pieces in order.
std::vector<Span> SplitAroundMatches(size_t size, const std::vector<Match>& matches,
                                     SplitBehavior behavior, bool invert);

}  // namespace tandem::tokenizer
