// Memory-mapped safetensors files, single or sharded (model.safetensors.index.json).
//
// Every header field is bounds-checked against the file: header length, JSON shape,
// dtype, shape × dtype size == byte range, offsets inside the data section, no overlaps.
// A truncated or hostile file gets a clear error naming the file and tensor, never a
// crash. Objects are immutable after Open and safe to read from many threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"
#include "common/model/dtype.h"

namespace tandem {

// A tensor's bytes inside a mapping; valid while its SafetensorsFile/WeightStore lives.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;  // exactly NumElements() * DTypeSize(dtype) bytes

  int64_t NumElements() const;
};

// "[1024, 128]": how shapes appear in error messages.
std::string ShapeToString(std::span<const int64_t> shape);

// One .safetensors file.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory image (used by Open and by tests of hostile headers). The views
  // point into `bytes`, which the caller keeps alive while the result is used.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Parse(std::span<const std::byte> bytes,
                                                                std::string source);

  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::unique_ptr<MappedFile> mapping_;  // null when parsed from caller-owned bytes
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All weights of a model directory: model.safetensors, or the shards that
// model.safetensors.index.json names (each shard opened once; the index's weight_map must
// agree with the shards' headers).
class WeightStore {
 public:
  static absl::StatusOr<std::unique_ptr<WeightStore>> Open(const std::string& dir);

  bool Has(const std::string& name) const { return tensors_.contains(name); }
  // NotFound naming the tensor when absent.
  absl::StatusOr<const TensorView*> Get(const std::string& name) const;
  // Like Get, and also checks the shape: InvalidArgument naming tensor and both shapes.
  absl::StatusOr<const TensorView*> Get(const std::string& name,
                                        std::span<const int64_t> expected_shape) const;
  std::vector<std::string> Names() const;
  // Sum of tensor bytes as stored.
  size_t TotalBytes() const;

 private:
  WeightStore() = default;
  // Takes ownership of `file` and registers its tensors; a name seen before is an error.
  absl::Status AddFile(std::unique_ptr<SafetensorsFile> file, const std::string& path);
  // Opens each shard that `index_path`'s weight_map names and checks the map against them.
  absl::Status AddShards(const std::string& index_path);

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> tensors_;
};

// Widens (or copies) a tensor to fp32. `out` must hold exactly NumElements() floats.
void ConvertToFloat(const TensorView& tensor, std::span<float> out);

// Writing (tools, tests): one tensor as it goes into a file.
struct SafetensorsTensor {
  std::string name;
  std::string dtype;  // written as is: "F32", "BF16", "I32", ...
  std::vector<int64_t> shape;
  std::string bytes;  // the raw little-endian data
};

// A safetensors image: u64 header length, the JSON header (space-padded to a multiple of 8
// bytes), then the tensors back to back in
// list order (data_offsets computed); `metadata_json` (an object's JSON text, or "" for none)
// becomes __metadata__. Little-endian hosts only.
std::string SerializeSafetensors(const std::vector<SafetensorsTensor>& tensors,
                                 const std::string& metadata_json = "");

}  // namespace tandem
