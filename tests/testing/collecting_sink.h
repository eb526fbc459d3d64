// An engine OutputSink for tests that keeps every output; called on the engine thread (or
// the test thread when it steps), read by the test once the request ended.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/engine/engine_types.h"

namespace tandem::testing {

class CollectingSink final : public OutputSink {
 public:
  void OnOutput(EngineOutput output) override {
    std::lock_guard<std::mutex> lock(mu);
    outputs.push_back(std::move(output));
  }
  // Tokens of output `index`, in order.
  std::vector<int32_t> Tokens(int32_t index = 0) const {
    std::vector<int32_t> tokens;
    for (const EngineOutput& o : outputs) {
      if (o.index == index) tokens.insert(tokens.end(), o.token_ids.begin(), o.token_ids.end());
    }
    return tokens;
  }
  std::string Text(int32_t index = 0) const {
    std::string text;
    for (const EngineOutput& o : outputs) {
      if (o.index == index) text += o.text;
    }
    return text;
  }
  // Output `index`'s last output (the one with a finish reason), or null.
  const EngineOutput* Final(int32_t index = 0) const {
    for (const EngineOutput& o : outputs) {
      if (o.index == index && o.finish != OutputFinish::kNone) return &o;
    }
    return nullptr;
  }
  mutable std::mutex mu;
  std::vector<EngineOutput> outputs;
};

}  // namespace tandem::testing
