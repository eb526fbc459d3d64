#include "common/tokenizer/pre_tokenizer.h"

#include <utility>

#include "common/status.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/overloaded.h"

namespace tandem::tokenizer {
namespace {

// Cuts `text` at `spans`; only a piece starting at byte 0 keeps the at-start flag.
template <class Piece>
void EmitSpans(const std::string& text, bool at_text_start, const std::vector<Span>& spans,
               std::vector<Piece>& out) {
  for (const Span& s : spans) {
    out.push_back({text.substr(s.begin, s.end - s.begin), at_text_start && s.begin == 0});
  }
}

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizer::FromJson(const Json& json, std::string_view path) {
  PreTokenizer pre_tokenizer;
  if (!json.is_null()) TANDEM_RETURN_IF_ERROR(pre_tokenizer.AddJson(json, path));
  return pre_tokenizer;
}

absl::Status PreTokenizer::AddJson(const Json& json, std::string_view path) {
  TANDEM_ASSIGN_OR_RETURN(std::string type, RequireString(json, path, "type"));
  if (type == "Sequence") {
    const std::string list_path = JsonPath(path, "pretokenizers");
    TANDEM_ASSIGN_OR_RETURN(const Json* list, RequireArray(json, path, "pretokenizers"));
    for (size_t i = 0; i < list->size(); ++i) {
      TANDEM_RETURN_IF_ERROR(AddJson((*list)[i], JsonIndexPath(list_path, i)));
    }
    return absl::OkStatus();
  }
  if (type == "Split") return AddSplit(json, path);
  if (type == "ByteLevel") return AddByteLevel(json, path);
  if (type == "Metaspace") {
    TANDEM_ASSIGN_OR_RETURN(MetaspaceOptions options, ParseMetaspaceOptions(json, path));
    steps_.push_back(std::move(options));
    return absl::OkStatus();
  }
  return UnsupportedType(path, type, "Sequence, Split, ByteLevel, Metaspace");
}

absl::Status PreTokenizer::AddSplit(const Json& json, std::string_view path) {
  TANDEM_ASSIGN_OR_RETURN(Pattern pattern, RequirePattern(json, path, "pattern"));
  TANDEM_ASSIGN_OR_RETURN(std::string behavior_name, RequireString(json, path, "behavior"));
  TANDEM_ASSIGN_OR_RETURN(SplitBehavior behavior,
                          ParseSplitBehavior(behavior_name, JsonPath(path, "behavior")));
  TANDEM_ASSIGN_OR_RETURN(bool invert, OptionalBool(json, path, "invert", false));
  steps_.push_back(Split{std::move(pattern), behavior, invert});
  return absl::OkStatus();
}

absl::Status PreTokenizer::AddByteLevel(const Json& json, std::string_view path) {
  ByteLevel byte_level;
  TANDEM_ASSIGN_OR_RETURN(byte_level.add_prefix_space,
                          OptionalBool(json, path, "add_prefix_space", true));
  TANDEM_ASSIGN_OR_RETURN(bool use_regex, OptionalBool(json, path, "use_regex", true));
  if (use_regex) {
    TANDEM_ASSIGN_OR_RETURN(byte_level.regex, Regex::Compile(kGpt2Pattern));
  }
  steps_.push_back(std::move(byte_level));
  return absl::OkStatus();
}

std::vector<std::string> PreTokenizer::PreTokenize(std::string_view text,
                                                   bool at_text_start) const {
  std::vector<Piece> pieces;
  pieces.push_back({std::string(text), at_text_start});
  for (const Step& step : steps_) {
    std::vector<Piece> next;
    next.reserve(pieces.size());
    for (Piece& piece : pieces) {
      if (piece.text.empty()) continue;
      std::visit(Overloaded{
                     [&](const Split& s) { ApplySplit(s, std::move(piece), next); },
                     [&](const ByteLevel& b) { ApplyByteLevel(b, std::move(piece), next); },
                     [&](const MetaspaceOptions& m) { ApplyMetaspace(m, std::move(piece), next); },
                 },
                 step);
    }
    pieces = std::move(next);
  }
  std::vector<std::string> words;
  words.reserve(pieces.size());
  for (Piece& piece : pieces) {
    if (!piece.text.empty()) words.push_back(std::move(piece.text));
  }
  return words;
}

void PreTokenizer::ApplySplit(const Split& split, Piece piece, std::vector<Piece>& out) {
  const std::vector<Match> matches = split.pattern.FindAll(piece.text);
  const std::vector<Span> spans =
      SplitAroundMatches(piece.text.size(), matches, split.behavior, split.invert);
  EmitSpans(piece.text, piece.at_text_start, spans, out);
}

void PreTokenizer::ApplyByteLevel(const ByteLevel& byte_level, Piece piece,
                                  std::vector<Piece>& out) {
  if (byte_level.add_prefix_space && !piece.text.starts_with(' ')) piece.text = " " + piece.text;
  std::vector<Piece> split;
  if (byte_level.regex != nullptr) {
    const std::vector<Span> spans =
        SplitAroundMatches(piece.text.size(), byte_level.regex->FindAll(piece.text),
                           SplitBehavior::kIsolated, /*invert=*/false);
    EmitSpans(piece.text, piece.at_text_start, spans, split);
  } else {
    split.push_back(std::move(piece));
  }
  for (Piece& p : split) out.push_back({BytesToByteChars(p.text), p.at_text_start});
}

void PreTokenizer::ApplyMetaspace(const MetaspaceOptions& options, Piece piece,
                                  std::vector<Piece>& out) {
  std::string text = ReplaceAll(Pattern{" ", nullptr}, piece.text, options.replacement);
  const bool starts_with_replacement = text.starts_with(options.replacement);
  switch (options.prepend_scheme) {
    case PrependScheme::kAlways:
      if (!starts_with_replacement) text = options.replacement + text;
      break;
    case PrependScheme::kFirst:
      if (!starts_with_replacement && piece.at_text_start) text = options.replacement + text;
      break;
    case PrependScheme::kNever:
      break;
  }
  if (!options.split) {
    out.push_back({std::move(text), piece.at_text_start});
    return;
  }
  const Pattern delimiter{options.replacement, nullptr};
  const std::vector<Span> spans = SplitAroundMatches(
      text.size(), delimiter.FindAll(text), SplitBehavior::kMergedWithNext, /*invert=*/false);
  EmitSpans(text, piece.at_text_start, spans, out);
}

}  // namespace tandem::tokenizer
