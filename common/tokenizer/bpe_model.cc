#include "common/tokenizer/bpe_model.h"

#include <limits>
#include <queue>

#include "absl/container/flat_hash_set.h"
#include "common/tokenizer/strings.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "common/tokenizer/utf8.h"

namespace tandem::tokenizer {
namespace {

constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max();

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A candidate merge of the live symbol at `pos` with its next symbol.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  bool operator>(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

}  // namespace

absl::StatusOr<BpeModel> BpeModel::FromJson(const Json& json, std::string_view path) {
  if (json.is_null()) return JsonError(path, "is required");
  TANDEM_ASSIGN_OR_RETURN(std::string type, RequireString(json, path, "type"));
  if (type != "BPE") return UnsupportedType(path, type, "BPE");
  BpeModel model;
  TANDEM_RETURN_IF_ERROR(model.ParseVocab(json, path));
  TANDEM_RETURN_IF_ERROR(model.ParseOptions(json, path));
  TANDEM_RETURN_IF_ERROR(model.ParseMerges(json, path));
  return model;
}

absl::Status BpeModel::ParseOptions(const Json& json, std::string_view path) {
  TANDEM_ASSIGN_OR_RETURN(const Json* dropout, FindField(json, path, "dropout"));
  if (dropout != nullptr && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    return JsonError(JsonPath(path, "dropout"), "is not supported (must be null)");
  }
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> prefix,
                          OptionalString(json, path, "continuing_subword_prefix"));
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> suffix,
                          OptionalString(json, path, "end_of_word_suffix"));
  continuing_subword_prefix_ = prefix.value_or("");
  end_of_word_suffix_ = suffix.value_or("");
  TANDEM_ASSIGN_OR_RETURN(fuse_unk_, OptionalBool(json, path, "fuse_unk", false));
  TANDEM_ASSIGN_OR_RETURN(byte_fallback_, OptionalBool(json, path, "byte_fallback", false));
  TANDEM_ASSIGN_OR_RETURN(ignore_merges_, OptionalBool(json, path, "ignore_merges", false));
  TANDEM_ASSIGN_OR_RETURN(std::optional<std::string> unk, OptionalString(json, path, "unk_token"));
  if (unk) {
    auto it = vocab_.find(*unk);
    if (it == vocab_.end()) {
      return JsonError(JsonPath(path, "unk_token"), Cat("\"", *unk, "\" is not in the vocab"));
    }
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(absl::StrFormat("<0x%02X>", b));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  return absl::OkStatus();
}

absl::Status BpeModel::ParseVocab(const Json& json, std::string_view path) {
  const std::string vocab_path = JsonPath(path, "vocab");
  TANDEM_ASSIGN_OR_RETURN(const Json* vocab, FindField(json, path, "vocab"));
  if (vocab == nullptr || !vocab->is_object()) {
    return JsonError(vocab_path, "must be an object mapping token to id");
  }
  absl::flat_hash_set<int32_t> seen_ids;
  vocab_.reserve(vocab->size());
  for (const auto& [token, value] : vocab->items()) {
    TANDEM_ASSIGN_OR_RETURN(int64_t id, RequireInt(*vocab, vocab_path, token, 0, kMaxId));
    if (!seen_ids.insert(static_cast<int32_t>(id)).second) {
      return JsonError(JsonPath(vocab_path, token), Cat("reuses id ", id));
    }
    vocab_.emplace(token, static_cast<int32_t>(id));
  }
  return absl::OkStatus();
}

absl::Status BpeModel::ParseMerges(const Json& json, std::string_view path) {
  const std::string merges_path = JsonPath(path, "merges");
  TANDEM_ASSIGN_OR_RETURN(const Json* merges, FindField(json, path, "merges"));
  if (merges == nullptr) return absl::OkStatus();
  if (!merges->is_array()) return JsonError(merges_path, "must be an array");
  if (merges->size() > static_cast<size_t>(kMaxId)) return JsonError(merges_path, "is too long");
  merges_.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& entry = (*merges)[i];
    const std::string entry_path = JsonIndexPath(merges_path, i);
    if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      TANDEM_RETURN_IF_ERROR(AddMerge(entry[0].get<std::string>(), entry[1].get<std::string>(),
                                      static_cast<int32_t>(i), entry_path));
      continue;
    }
    if (!entry.is_string()) {
      return JsonError(entry_path, "must be \"left right\" or [\"left\", \"right\"]");
    }
    const std::string text = entry.get<std::string>();
    const size_t space = text.find(' ');
    if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
      return JsonError(entry_path, "must be two tokens separated by one space");
    }
    TANDEM_RETURN_IF_ERROR(AddMerge(std::string_view(text).substr(0, space),
                                    std::string_view(text).substr(space + 1),
                                    static_cast<int32_t>(i), entry_path));
  }
  return absl::OkStatus();
}

absl::Status BpeModel::AddMerge(std::string_view left, std::string_view right, int32_t rank,
                                std::string_view path) {
  auto left_it = vocab_.find(left);
  auto right_it = vocab_.find(right);
  if (left_it == vocab_.end() || right_it == vocab_.end()) {
    return JsonError(path, Cat("names a token that is not in the vocab: \"",
                                        left_it == vocab_.end() ? left : right, "\""));
  }
  std::string_view right_rest = right;
  if (!continuing_subword_prefix_.empty() && right_rest.starts_with(continuing_subword_prefix_)) {
    right_rest.remove_prefix(continuing_subword_prefix_.size());
  }
  const std::string merged = Cat(left, right_rest);
  auto merged_it = vocab_.find(merged);
  if (merged_it == vocab_.end()) {
    return JsonError(path, Cat("merges into \"", merged, "\", which is not in the vocab"));
  }
  // A later duplicate overrides an earlier one, as HF's map-building does.
  merges_.insert_or_assign(PairKey(left_it->second, right_it->second),
                           MergeTarget{rank, merged_it->second});
  return absl::OkStatus();
}

const BpeModel::MergeTarget* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>& ids) const {
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  std::vector<Symbol> symbols = InitialSymbols(word);
  Merge(symbols);
  for (const Symbol& s : symbols) {
    if (s.alive) ids.push_back(s.id);
  }
}

bool BpeModel::AppendByteFallback(std::string_view ch, std::vector<Symbol>& symbols) const {
  for (char c : ch) {
    if (byte_ids_[static_cast<uint8_t>(c)] < 0) return false;
  }
  for (char c : ch) symbols.push_back({byte_ids_[static_cast<uint8_t>(c)], -1, -1, true});
  return true;
}

std::vector<BpeModel::Symbol> BpeModel::InitialSymbols(std::string_view word) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool previous_was_unk = false;
  std::string key;
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = CharLength(word, pos);
    const std::string_view ch = word.substr(pos, len);
    key.clear();
    if (pos > 0) key.append(continuing_subword_prefix_);
    key.append(ch);
    if (pos + len == word.size()) key.append(end_of_word_suffix_);
    pos += len;
    if (auto it = vocab_.find(key); it != vocab_.end()) {
      symbols.push_back({it->second, -1, -1, true});
      previous_was_unk = false;
    } else if (byte_fallback_ && AppendByteFallback(ch, symbols)) {
      previous_was_unk = false;
    } else if (unk_id_) {
      if (!(fuse_unk_ && previous_was_unk)) symbols.push_back({*unk_id_, -1, -1, true});
      previous_was_unk = true;
    }  // no unk token: the character is dropped, as HF does
  }
  for (size_t i = 0; i < symbols.size(); ++i) {
    symbols[i].prev = static_cast<int32_t>(i) - 1;
    symbols[i].next = i + 1 < symbols.size() ? static_cast<int32_t>(i) + 1 : -1;
  }
  return symbols;
}

void BpeModel::Merge(std::vector<Symbol>& symbols) const {
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_candidate = [&](int32_t pos) {
    if (pos < 0 || symbols[pos].next < 0) return;
    if (const MergeTarget* m = FindMerge(symbols[pos].id, symbols[symbols[pos].next].id)) {
      queue.push({m->rank, pos, m->new_id});
    }
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) push_candidate(static_cast<int32_t>(i));
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    const MergeTarget* current = FindMerge(left.id, symbols[left.next].id);
    if (current == nullptr || current->rank != top.rank) continue;  // stale entry
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    push_candidate(left.prev);
    push_candidate(top.pos);
  }
}

}  // namespace tandem::tokenizer
