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
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.is_null()) header["__metadata__"] = metadata;
  std::string data;
  for (const TestTensor& tensor : tensors) {
    header[tensor.name] = {{"dtype", tensor.dtype},
                           {"shape", tensor.shape},
                           {"data_offsets", {data.size(), data.size() + tensor.bytes.size()}}};
    data += tensor.bytes;
  }
  return MakeSafetensorsRaw(header.dump(), data);
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
