// UTF-8 helpers for the tokenizer: validation, code point iteration, and the lossy
// byte-to-text conversion HF tokenizers uses when decoding (Rust's from_utf8_lossy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tandem::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Byte offset of the first byte that does not start a well-formed UTF-8 character
// (overlongs, surrogates and code points past U+10FFFF are ill-formed), or nullopt.
std::optional<size_t> FirstInvalidUtf8Offset(std::string_view text);

// Length in bytes of the well-formed character starting at text[pos], or 0 when the bytes
// there are not one (truncated, ill-formed). Requires pos < text.size().
size_t WellFormedCharLength(std::string_view text, size_t pos);

// Length of the character starting at text[pos] in text already known to be valid UTF-8.
size_t CharLength(std::string_view text, size_t pos);

// Decodes the code point at text[pos] of valid UTF-8 text.
char32_t DecodeCodePoint(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of `cp` (a valid scalar value) to `out`.
void AppendCodePoint(char32_t cp, std::string& out);

// Converts arbitrary bytes to valid UTF-8, replacing each maximal ill-formed subsequence
// with one U+FFFD (the Unicode "substitution of maximal subparts" practice, as Rust's
// String::from_utf8_lossy does). Valid input is returned unchanged.
std::string ToValidUtf8Lossy(std::string_view bytes);

}  // namespace tandem::tokenizer
