// A read-only memory mapping of a whole file (RAII).
//
// Weights are mapped, never copied: fp32 tensors are used in place, narrower dtypes are
// widened once at load. Thread-safe for concurrent reads; movable, not copyable.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace tandem {

class MappedFile {
 public:
  // Maps `path` read-only. An empty file maps to an empty span.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_bytes_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const std::byte* data, size_t size_bytes)
      : path_(std::move(path)), data_(data), size_bytes_(size_bytes) {}

  std::string path_;
  const std::byte* data_;
  size_t size_bytes_;
};

// Reads a whole (small) text file such as config.json.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace tandem
