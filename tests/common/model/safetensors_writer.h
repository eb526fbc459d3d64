// Builds safetensors images in memory for tests: well-formed ones from a tensor list, and
// hostile ones from a hand-written header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/model/safetensors.h"
#include "nlohmann/json.hpp"

namespace tandem::testing {

using TestTensor = SafetensorsTensor;  // common/model/safetensors.h

// Header length + header JSON + data. The JSON is written as given (hostile tests pass
// anything); `data` follows it unchanged.
std::string MakeSafetensorsRaw(std::string_view header_json, std::string_view data);

// A well-formed image (SerializeSafetensors): `metadata` (an object, or null for none)
// written as __metadata__.
std::string MakeSafetensors(const std::vector<TestTensor>& tensors,
                            const nlohmann::json& metadata = nullptr);

std::string F32Bytes(std::span<const float> values);
std::string U16Bytes(std::span<const uint16_t> values);  // BF16 or F16 bit patterns

inline std::span<const std::byte> AsBytes(std::string_view image) {
  return std::as_bytes(std::span<const char>(image.data(), image.size()));
}

}  // namespace tandem::testing
