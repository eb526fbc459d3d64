// Builders for small tokenizer.json documents used by the unit tests.
#pragma once

#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace tandem::testing {

// A BPE "model" object: vocab ids are the positions in `vocab`.
inline nlohmann::json BpeModelJson(const std::vector<std::string>& vocab, nlohmann::json merges) {
  nlohmann::json model = {{"type", "BPE"},
                          {"dropout", nullptr},
                          {"unk_token", nullptr},
                          {"continuing_subword_prefix", nullptr},
                          {"end_of_word_suffix", nullptr},
                          {"fuse_unk", false},
                          {"byte_fallback", false},
                          {"ignore_merges", false},
                          {"merges", std::move(merges)}};
  model["vocab"] = nlohmann::json::object();
  for (size_t i = 0; i < vocab.size(); ++i) model["vocab"][vocab[i]] = i;
  return model;
}

// A whole tokenizer.json around `model`, with null pipeline stages unless overridden in
// `fields` (e.g. {{"pre_tokenizer", ...}}).
inline nlohmann::json TokenizerJson(nlohmann::json model, nlohmann::json fields = nlohmann::json::object()) {
  nlohmann::json root = {{"version", "1.0"},          {"truncation", nullptr},
                         {"padding", nullptr},        {"added_tokens", nlohmann::json::array()},
                         {"normalizer", nullptr},     {"pre_tokenizer", nullptr},
                         {"post_processor", nullptr}, {"decoder", nullptr}};
  root["model"] = std::move(model);
  for (auto& [key, value] : fields.items()) root[key] = value;
  return root;
}

}  // namespace tandem::testing
