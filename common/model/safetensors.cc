// Parsing and validation of one safetensors file image, and widening tensors to fp32.
#include "common/model/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/logging.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and is read in place");

using json = nlohmann::json;

constexpr size_t kHeaderLengthBytes = 8;
// The reference implementation's limit; bounds the memory a hostile header can make us use.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Any tensor's byte count (elements × up to 8 bytes) then fits in int64.
constexpr uint64_t kMaxElements = std::numeric_limits<int64_t>::max() / 8;

absl::Status FileError(absl::string_view source, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
}

absl::Status TensorError(absl::string_view source, absl::string_view name,
                         absl::string_view message) {
  return FileError(source, absl::StrCat("tensor \"", name, "\": ", message));
}

// A short rendering of a JSON value for error messages.
std::string Describe(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

// The header's byte length, checked against the file size and kMaxHeaderBytes.
absl::StatusOr<uint64_t> ReadHeaderLength(std::span<const std::byte> bytes,
                                          absl::string_view source) {
  if (bytes.size() < kHeaderLengthBytes) {
    return FileError(source, absl::StrCat("file is ", bytes.size(),
                                          " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data(), kHeaderLengthBytes);
  uint64_t available = bytes.size() - kHeaderLengthBytes;
  if (header_bytes > available) {
    return FileError(source, absl::StrCat("header length ", header_bytes, " exceeds the ",
                                          available, " bytes after the length prefix"));
  }
  if (header_bytes > kMaxHeaderBytes) {
    return FileError(source, absl::StrCat("header length ", header_bytes, " exceeds the limit of ",
                                          kMaxHeaderBytes));
  }
  return header_bytes;
}

absl::StatusOr<DType> ParseDType(const json& entry, absl::string_view source,
                                 absl::string_view name) {
  auto it = entry.find("dtype");
  if (it == entry.end() || !it->is_string()) {
    return TensorError(source, name, "dtype must be a string");
  }
  std::string dtype_name = it->get<std::string>();
  std::optional<DType> dtype = ParseSafetensorsDType(dtype_name);
  if (!dtype) {
    return TensorError(source, name,
                       absl::StrCat("dtype \"", dtype_name,
                                    "\" is not supported (supported: F32, "
                                    "BF16, F16, I32)"));
  }
  return *dtype;
}

// Shape dims are non-negative int64 and their product is at most kMaxElements.
absl::StatusOr<std::vector<int64_t>> ParseShape(const json& entry, absl::string_view source,
                                                absl::string_view name) {
  auto it = entry.find("shape");
  if (it == entry.end() || !it->is_array()) {
    return TensorError(source, name, "shape must be an array of non-negative integers");
  }
  std::vector<int64_t> shape;
  uint64_t num_elements = 1;
  for (const json& dim_json : *it) {
    if (!dim_json.is_number_unsigned() || dim_json.get<uint64_t>() > kMaxElements) {
      return TensorError(
          source, name,
          absl::StrCat("shape ", Describe(*it), " must hold integers in [0, ", kMaxElements, "]"));
    }
    uint64_t dim = dim_json.get<uint64_t>();
    if (dim != 0 && num_elements > kMaxElements / dim) {
      return TensorError(source, name,
                         absl::StrCat("shape ", Describe(*it), " has too many elements"));
    }
    num_elements *= dim;
    shape.push_back(static_cast<int64_t>(dim));
  }
  return shape;
}

// [begin, end) of the tensor inside the data section, checked against its size.
absl::StatusOr<std::pair<uint64_t, uint64_t>> ParseOffsets(const json& entry,
                                                           uint64_t expected_bytes,
                                                           uint64_t data_bytes,
                                                           absl::string_view source,
                                                           absl::string_view name) {
  auto it = entry.find("data_offsets");
  if (it == entry.end() || !it->is_array() || it->size() != 2 || !(*it)[0].is_number_unsigned() ||
      !(*it)[1].is_number_unsigned()) {
    return TensorError(source, name, "data_offsets must be [begin, end] of non-negative integers");
  }
  uint64_t begin = (*it)[0].get<uint64_t>();
  uint64_t end = (*it)[1].get<uint64_t>();
  if (begin > end) {
    return TensorError(source, name,
                       absl::StrCat("data_offsets [", begin, ", ", end, "] have begin > end"));
  }
  if (end > data_bytes) {
    return TensorError(source, name,
                       absl::StrCat("data_offsets end ", end, " is past the data section (",
                                    data_bytes, " bytes; is the file truncated?)"));
  }
  if (end - begin != expected_bytes) {
    return TensorError(
        source, name,
        absl::StrCat("shape and dtype need ", expected_bytes, " bytes but data_offsets [", begin,
                     ", ", end, "] span ", end - begin));
  }
  return std::make_pair(begin, end);
}

absl::StatusOr<TensorView> ParseTensor(const std::string& name, const json& entry,
                                       std::span<const std::byte> data, absl::string_view source) {
  if (!entry.is_object()) return TensorError(source, name, "entry must be an object");
  TensorView tensor;
  tensor.name = name;
  TANDEM_ASSIGN_OR_RETURN(tensor.dtype, ParseDType(entry, source, name));
  TANDEM_ASSIGN_OR_RETURN(tensor.shape, ParseShape(entry, source, name));
  uint64_t expected_bytes = static_cast<uint64_t>(tensor.NumElements()) * DTypeSize(tensor.dtype);
  TANDEM_ASSIGN_OR_RETURN(auto range,
                          ParseOffsets(entry, expected_bytes, data.size(), source, name));
  tensor.data = data.subspan(range.first, range.second - range.first);
  return tensor;
}

absl::Status ParseMetadata(const json& value, absl::string_view source,
                           std::map<std::string, std::string>& metadata) {
  if (!value.is_object()) return FileError(source, "__metadata__ must be an object");
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return FileError(source, absl::StrCat("__metadata__ value for \"", key,
                                            "\" must be a string, got ", Describe(item)));
    }
    metadata[key] = item.get<std::string>();
  }
  return absl::OkStatus();
}

// No two non-empty tensors share a byte.
absl::Status CheckNoOverlap(const std::map<std::string, TensorView>& tensors,
                            const std::byte* data_begin, absl::string_view source) {
  std::vector<std::tuple<size_t, size_t, const std::string*>> ranges;  // [begin, end), name
  for (const auto& [name, tensor] : tensors) {
    if (tensor.data.empty()) continue;
    size_t begin = static_cast<size_t>(tensor.data.data() - data_begin);
    ranges.emplace_back(begin, begin + tensor.data.size(), &name);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    const auto& [prev_begin, prev_end, prev_name] = ranges[i - 1];
    const auto& [begin, end, name] = ranges[i];
    if (begin < prev_end) {
      return FileError(source,
                       absl::StrCat("tensors \"", *prev_name, "\" [", prev_begin, ", ", prev_end,
                                    ") and \"", *name, "\" [", begin, ", ", end, ") overlap"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int64_t TensorView::NumElements() const {
  int64_t num_elements = 1;
  for (int64_t dim : shape) num_elements *= dim;
  return num_elements;
}

std::string ShapeToString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::Open(path));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, Parse(mapping->bytes(), path));
  file->mapping_ = std::move(mapping);  // the views point into it; its address is stable
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Parse(
    std::span<const std::byte> bytes, std::string source) {
  TANDEM_ASSIGN_OR_RETURN(uint64_t header_bytes, ReadHeaderLength(bytes, source));
  std::string_view header_text(reinterpret_cast<const char*>(bytes.data()) + kHeaderLengthBytes,
                               header_bytes);
  json header = json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return FileError(source, "header is not valid JSON");
  if (!header.is_object()) {
    return FileError(source,
                     absl::StrCat("header must be a JSON object, got ", header.type_name()));
  }
  std::span<const std::byte> data = bytes.subspan(kHeaderLengthBytes + header_bytes);
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  try {
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        TANDEM_RETURN_IF_ERROR(ParseMetadata(entry, source, file->metadata_));
        continue;
      }
      TANDEM_ASSIGN_OR_RETURN(TensorView tensor, ParseTensor(name, entry, data, source));
      file->tensors_.emplace(name, std::move(tensor));
    }
  } catch (const json::exception& e) {  // not expected: every access checks types first
    return absl::InternalError(absl::StrCat(source, ": ", e.what()));
  }
  TANDEM_RETURN_IF_ERROR(CheckNoOverlap(file->tensors_, data.data(), source));
  return file;
}

void ConvertToFloat(const TensorView& tensor, std::span<float> out) {
  TANDEM_CHECK(out.size() == static_cast<size_t>(tensor.NumElements()))
      << tensor.name << ": out has " << out.size() << " floats, tensor has "
      << tensor.NumElements();
  TANDEM_CHECK(tensor.data.size() == out.size() * DTypeSize(tensor.dtype)) << tensor.name;
  // memcpy per element: the data section gives no alignment guarantee.
  const std::byte* src = tensor.data.data();
  switch (tensor.dtype) {
    case DType::kF32:
      if (!out.empty()) std::memcpy(out.data(), src, tensor.data.size());
      return;
    case DType::kBF16:
    case DType::kF16: {
      bool is_bf16 = tensor.dtype == DType::kBF16;
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, sizeof(bits));
        out[i] = is_bf16 ? BF16ToFloat(bits) : F16ToFloat(bits);
      }
      return;
    }
    case DType::kI32:
      for (size_t i = 0; i < out.size(); ++i) {
        int32_t value;
        std::memcpy(&value, src + 4 * i, sizeof(value));
        out[i] = static_cast<float>(value);
      }
      return;
  }
}

std::string SerializeSafetensors(const std::vector<SafetensorsTensor>& tensors,
                                 const std::string& metadata_json) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_json.empty()) header["__metadata__"] = nlohmann::json::parse(metadata_json);
  size_t data_bytes = 0;
  for (const SafetensorsTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data_bytes, data_bytes + t.bytes.size()}}};
    data_bytes += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const uint64_t header_bytes = text.size();
  std::string image(sizeof(header_bytes), '\0');
  std::memcpy(image.data(), &header_bytes, sizeof(header_bytes));
  image.reserve(image.size() + text.size() + data_bytes);
  image += text;
  for (const SafetensorsTensor& t : tensors) image += t.bytes;
  return image;
}

}  // namespace tandem
