// IncrementalDetokenizer: turns a stream of generated token ids into text deltas.
//
// Design (the prefix-window scheme of vLLM/TGI; see docs/tokenizer.md):
//   ids_ = context ids + generated ids. Text for ids_[0, read_offset_) has been emitted.
//   On each Push, decode the window ids_[prefix_offset_, end) and the already-emitted part
//   ids_[prefix_offset_, read_offset_); the new text is the first minus the second. Because
//   both decodes start at the same token, decoder effects that depend on the start of the
//   text (SentencePiece's Strip of one leading space, Metaspace dropping the first token's
//   "▁") cancel out, and they apply to the whole stream only when the window starts at
//   token 0. When the window's text ends in U+FFFD (a character still incomplete: a
//   byte-level or <0xNN> token carrying part of a UTF-8 sequence) nothing is emitted until
//   a later token completes it, so a piece is never invalid UTF-8 and never splits a
//   character. After emitting, prefix_offset_ moves to the old read_offset_ and
//   read_offset_ to the end, so each Push decodes only a few tokens.
//
// Guarantee: the concatenation of every Push and the final Flush equals
// tokenizer.Decode(generated ids) when there is no context, and equals
// Decode(context + generated) minus Decode(context) with one. (Exception: a run of
// byte-fallback tokens that never forms valid UTF-8 is shown as it decodes at that moment.)
//
// Not thread-safe: one instance per sequence, used by one thread. The tokenizer must outlive
// it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"

namespace tandem {

class IncrementalDetokenizer {
 public:
  struct Options {
    bool skip_special_tokens = false;  // as Tokenizer::Decode's flag
  };

  // `context_ids`: the prompt (or the tail of it), used so the first generated token is
  // rendered as a continuation (e.g. with its leading space); may be empty.
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> context_ids,
                         Options options);

  // Appends one generated id; returns the text that became final (possibly empty).
  std::string Push(int32_t id);

  // End of stream: returns whatever is still held back (e.g. an incomplete character as
  // U+FFFD).
  std::string Flush();

 private:
  std::string Advance(bool final);
  std::string DecodeRange(size_t begin, size_t end) const;
  void DropConsumedIds();

  const Tokenizer& tokenizer_;
  Options options_;
  std::vector<int32_t> ids_;  // context tail + generated ids not yet compacted away
  size_t prefix_offset_ = 0;  // window start, index into ids_
  size_t read_offset_ = 0;    // text of ids_[0, read_offset_) has been emitted
};

}  // namespace tandem
