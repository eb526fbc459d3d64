#include "common/tokenizer/split.h"

#include <algorithm>

#include "common/tokenizer/json_fields.h"

namespace tandem::tokenizer {
namespace {

struct Piece {
  Span span;
  bool is_delimiter;
};

// Covers [0, size) with matches and the gaps between them.
std::vector<Piece> Cover(size_t size, const std::vector<Match>& matches, bool invert) {
  std::vector<Piece> pieces;
  size_t last = 0;
  for (const Match& m : matches) {
    if (m.begin > last) pieces.push_back({{last, m.begin}, invert});
    pieces.push_back({{m.begin, m.end}, !invert});
    last = m.end;
  }
  if (last < size) pieces.push_back({{last, size}, invert});
  return pieces;
}

std::vector<Span> MergeWithPrevious(const std::vector<Piece>& pieces) {
  std::vector<Span> out;
  bool previous_delimiter = false;
  for (const Piece& p : pieces) {
    if (p.is_delimiter && !previous_delimiter && !out.empty()) {
      out.back().end = p.span.end;
    } else {
      out.push_back(p.span);
    }
    previous_delimiter = p.is_delimiter;
  }
  return out;
}

std::vector<Span> MergeWithNext(const std::vector<Piece>& pieces) {
  std::vector<Span> out;
  bool previous_delimiter = false;  // the piece after, as we walk backwards
  for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
    if (it->is_delimiter && !previous_delimiter && !out.empty()) {
      out.back().begin = it->span.begin;
    } else {
      out.push_back(it->span);
    }
    previous_delimiter = it->is_delimiter;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<Span> MergeContiguous(const std::vector<Piece>& pieces) {
  std::vector<Span> out;
  bool previous_delimiter = false;
  for (const Piece& p : pieces) {
    if (p.is_delimiter == previous_delimiter && !out.empty()) {  // same kind as the last piece
      out.back().end = p.span.end;
    } else {
      out.push_back(p.span);
    }
    previous_delimiter = p.is_delimiter;
  }
  return out;
}

std::vector<Span> ApplyBehavior(const std::vector<Piece>& pieces, SplitBehavior behavior) {
  std::vector<Span> out;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Piece& p : pieces) {
        if (!p.is_delimiter) out.push_back(p.span);
      }
      return out;
    case SplitBehavior::kIsolated:
      for (const Piece& p : pieces) out.push_back(p.span);
      return out;
    case SplitBehavior::kMergedWithPrevious:
      return MergeWithPrevious(pieces);
    case SplitBehavior::kMergedWithNext:
      return MergeWithNext(pieces);
    case SplitBehavior::kContiguous:
      return MergeContiguous(pieces);
  }
  return out;
}

}  // namespace

absl::StatusOr<SplitBehavior> ParseSplitBehavior(std::string_view name, std::string_view path) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return JsonError(path, std::string("\"") + std::string(name) +
                             "\" is not a split behavior (Removed, Isolated, MergedWithPrevious, "
                             "MergedWithNext, Contiguous)");
}

std::vector<Span> SplitAroundMatches(size_t size, const std::vector<Match>& matches,
                                     SplitBehavior behavior, bool invert) {
  std::vector<Span> spans = ApplyBehavior(Cover(size, matches, invert), behavior);
  std::erase_if(spans, [](const Span& s) { return s.begin == s.end; });
  return spans;
}

}  // namespace tandem::tokenizer
