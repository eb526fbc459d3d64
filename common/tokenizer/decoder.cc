#include "common/tokenizer/decoder.h"

#include <cstdint>
#include <optional>

#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/overloaded.h"
#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {
namespace {

using Tokens = std::vector<std::string>;

Tokens DecodeByteLevel(const Tokens& tokens) {
  std::string bytes;
  for (const std::string& token : tokens) {
    if (!ByteCharsToBytes(token, bytes)) bytes.append(token);  // not byte chars: kept verbatim
  }
  return {ToValidUtf8Lossy(bytes)};
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The byte of a "<0xNN>" token, or nullopt.
std::optional<uint8_t> ByteFallbackValue(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return std::nullopt;
  const int hi = HexDigit(token[3]);
  const int lo = HexDigit(token[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

// A run of byte tokens becomes one string when it is valid UTF-8, else one U+FFFD per byte.
void FlushBytes(std::string& bytes, Tokens& out) {
  if (bytes.empty()) return;
  if (!FirstInvalidUtf8Offset(bytes)) {
    out.push_back(bytes);
  } else {
    for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back(kReplacementChar);
  }
  bytes.clear();
}

Tokens DecodeByteFallback(Tokens tokens) {
  Tokens out;
  std::string bytes;
  for (std::string& token : tokens) {
    if (std::optional<uint8_t> b = ByteFallbackValue(token)) {
      bytes.push_back(static_cast<char>(*b));
      continue;
    }
    FlushBytes(bytes, out);
    out.push_back(std::move(token));
  }
  FlushBytes(bytes, out);
  return out;
}

// Removes up to `max_count` copies of `c` from the front (or back) of `token`.
void StripChar(std::string& token, std::string_view c, size_t start, size_t stop) {
  size_t begin = 0;
  for (size_t i = 0; i < start && token.substr(begin).starts_with(c); ++i) begin += c.size();
  size_t end = token.size();
  for (size_t i = 0; i < stop && end >= begin + c.size() &&
                     std::string_view(token).substr(0, end).ends_with(c);
       ++i) {
    end -= c.size();
  }
  token = token.substr(begin, end - begin);
}

Tokens DecodeMetaspace(const MetaspaceOptions& options, Tokens tokens) {
  const Pattern replacement{options.replacement, nullptr};
  for (size_t i = 0; i < tokens.size(); ++i) {
    const bool drop = i == 0 && options.prepend_scheme != PrependScheme::kNever;
    tokens[i] = ReplaceAll(replacement, tokens[i], drop ? "" : " ");
  }
  return tokens;
}

}  // namespace

absl::StatusOr<Decoder> Decoder::FromJson(const Json& json, std::string_view path) {
  Decoder decoder;
  if (json.is_null()) return decoder;
  decoder.is_null_ = false;
  TANDEM_RETURN_IF_ERROR(decoder.AddJson(json, path));
  return decoder;
}

absl::Status Decoder::AddJson(const Json& json, std::string_view path) {
  TANDEM_ASSIGN_OR_RETURN(std::string type, RequireString(json, path, "type"));
  if (type == "Sequence") {
    const std::string list_path = JsonPath(path, "decoders");
    TANDEM_ASSIGN_OR_RETURN(const Json* list, RequireArray(json, path, "decoders"));
    for (size_t i = 0; i < list->size(); ++i) {
      TANDEM_RETURN_IF_ERROR(AddJson((*list)[i], JsonIndexPath(list_path, i)));
    }
  } else if (type == "ByteLevel") {
    steps_.push_back(ByteLevel{});
  } else if (type == "ByteFallback") {
    steps_.push_back(ByteFallback{});
  } else if (type == "Fuse") {
    steps_.push_back(Fuse{});
  } else if (type == "Replace") {
    TANDEM_ASSIGN_OR_RETURN(Pattern pattern, RequirePattern(json, path, "pattern"));
    TANDEM_ASSIGN_OR_RETURN(std::string content, RequireString(json, path, "content"));
    steps_.push_back(Replace{std::move(pattern), std::move(content)});
  } else if (type == "Strip") {
    return AddStrip(json, path);
  } else if (type == "Metaspace") {
    TANDEM_ASSIGN_OR_RETURN(MetaspaceOptions options, ParseMetaspaceOptions(json, path));
    steps_.push_back(std::move(options));
  } else {
    return UnsupportedType(path, type,
                           "Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace");
  }
  return absl::OkStatus();
}

absl::Status Decoder::AddStrip(const Json& json, std::string_view path) {
  Strip strip;
  TANDEM_ASSIGN_OR_RETURN(strip.content, RequireChar(json, path, "content"));
  TANDEM_ASSIGN_OR_RETURN(int64_t start, RequireInt(json, path, "start", 0, 1 << 20));
  TANDEM_ASSIGN_OR_RETURN(int64_t stop, RequireInt(json, path, "stop", 0, 1 << 20));
  strip.start = static_cast<size_t>(start);
  strip.stop = static_cast<size_t>(stop);
  steps_.push_back(std::move(strip));
  return absl::OkStatus();
}

std::string Decoder::Decode(Tokens tokens) const {
  if (is_null_) return absl::StrJoin(tokens, " ");
  for (const Step& step : steps_) {
    std::visit(Overloaded{
                   [&](const ByteLevel&) { tokens = DecodeByteLevel(tokens); },
                   [&](const ByteFallback&) { tokens = DecodeByteFallback(std::move(tokens)); },
                   [&](const Fuse&) { tokens = {absl::StrJoin(tokens, "")}; },
                   [&](const Replace& r) {
                     for (std::string& t : tokens) t = ReplaceAll(r.pattern, t, r.content);
                   },
                   [&](const Strip& s) {
                     for (std::string& t : tokens) StripChar(t, s.content, s.start, s.stop);
                   },
                   [&](const MetaspaceOptions& m) { tokens = DecodeMetaspace(m, std::move(tokens)); },
               },
               step);
  }
  return absl::StrJoin(tokens, "");
}

}  // namespace tandem::tokenizer
