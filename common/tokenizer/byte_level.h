// GPT-2's byte-level alphabet: every byte 0..255 maps to one printable code point, so any
// byte string becomes a string of "byte characters" that BPE vocabularies are built from.
// Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the other 68
// bytes map to U+0100.. in byte order (so ' ' -> 'Ġ', '\n' -> 'Ċ').
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::tokenizer {

// GPT-2's pre-tokenization regex, used by the ByteLevel pre-tokenizer when use_regex is set.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Maps every byte of `bytes` to its byte character (UTF-8 encoded).
std::string BytesToByteChars(std::string_view bytes);

// Inverse of BytesToByteChars for one token: appends the bytes its characters stand for to
// `out` and returns true; when some character is not a byte character, appends nothing and
// returns false. `token` must be valid UTF-8.
bool ByteCharsToBytes(std::string_view token, std::string& out);

}  // namespace tandem::tokenizer
