#include "tests/common/model/safetensors_writer.h"

#include <cstring>

namespace tandem::testing {

std::string MakeSafetensorsRaw(std::string_view header_json, std::string_view data) {
  uint64_t header_bytes = header_json.size();
  std::string image(8, '\0');
  std::memcpy(image.data(), &header_bytes, 8);  // the test hosts are little-endian
  image.append(header_json);
  image.append(data);
  return image;
}

std::string MakeSafetensors(const std::vector<TestTensor>& tensors,
                            const nlohmann::json& metadata) {
  return SerializeSafetensors(tensors, metadata.is_null() ? "" : metadata.dump());
}

std::string F32Bytes(std::span<const float> values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::string U16Bytes(std::span<const uint16_t> values) {
  std::string bytes(values.size() * sizeof(uint16_t), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

}  // namespace tandem::testing
