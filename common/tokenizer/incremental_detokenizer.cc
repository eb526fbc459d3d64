#include "common/tokenizer/incremental_detokenizer.h"

#include <algorithm>

#include "common/tokenizer/utf8.h"

namespace tandem {
namespace {

// Context tokens decoded before the first generated one: enough to settle spacing and any
// character the context's last tokens leave incomplete.
constexpr size_t kContextWindowTokens = 5;
// ids_ is compacted once this many consumed ids accumulate in front of the window.
constexpr size_t kCompactThreshold = 256;

// Byte length of the longest common prefix of a and b that ends on a character boundary.
size_t CommonPrefixLength(std::string_view a, std::string_view b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  while (n > 0 && n < b.size() && (static_cast<uint8_t>(b[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               std::span<const int32_t> context_ids,
                                               Options options)
    : tokenizer_(tokenizer), options_(options) {
  const size_t keep = std::min(context_ids.size(), kContextWindowTokens);
  ids_.assign(context_ids.end() - keep, context_ids.end());
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
}

std::string IncrementalDetokenizer::Push(int32_t id) {
  ids_.push_back(id);
  return Advance(/*final=*/false);
}

std::string IncrementalDetokenizer::Flush() { return Advance(/*final=*/true); }

std::string IncrementalDetokenizer::DecodeRange(size_t begin, size_t end) const {
  return tokenizer_.Decode(std::span<const int32_t>(ids_).subspan(begin, end - begin),
                           options_.skip_special_tokens);
}

std::string IncrementalDetokenizer::Advance(bool final) {
  if (read_offset_ == ids_.size()) return "";
  const std::string emitted = DecodeRange(prefix_offset_, read_offset_);
  const std::string window = DecodeRange(prefix_offset_, ids_.size());
  size_t cut = emitted.size();
  if (!std::string_view(window).starts_with(emitted)) {
    if (!final) return "";  // the window still disagrees with what was shown: wait
    cut = CommonPrefixLength(emitted, window);
  }
  if (!final && std::string_view(window).ends_with(tokenizer::kReplacementChar)) {
    return "";  // an incomplete character: hold it back until a later token completes it
  }
  if (window.size() <= cut && !final) return "";  // e.g. only skipped special tokens so far
  std::string delta = window.substr(std::min(cut, window.size()));
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  DropConsumedIds();
  return delta;
}

void IncrementalDetokenizer::DropConsumedIds() {
  if (prefix_offset_ < kCompactThreshold) return;
  ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_));
  read_offset_ -= prefix_offset_;
  prefix_offset_ = 0;
}

}  // namespace tandem
