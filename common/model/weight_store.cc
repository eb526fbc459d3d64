// A model directory's weights: model.safetensors, or the shards of
// model.safetensors.index.json.
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/model/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

using json = nlohmann::json;
using WeightMap = std::vector<std::pair<std::string, std::string>>;  // tensor, shard file

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

absl::Status IndexError(absl::string_view index_path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", message));
}

// A shard must be a file directly inside the model directory: no separators, no "..".
bool IsPlainFileName(absl::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(absl::string_view("/\\\0", 3)) == absl::string_view::npos;
}

// Reads the index's weight_map with every shard name checked by IsPlainFileName.
absl::StatusOr<WeightMap> ReadWeightMap(const std::string& index_path) {
  TANDEM_ASSIGN_OR_RETURN(std::string text, ReadTextFile(index_path));
  json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded()) return IndexError(index_path, "not valid JSON");
  if (!index.is_object()) return IndexError(index_path, "must be a JSON object");
  auto it = index.find("weight_map");
  if (it == index.end() || !it->is_object() || it->empty()) {
    return IndexError(index_path,
                      "weight_map must be a non-empty object of tensor name -> shard file");
  }
  WeightMap weight_map;
  for (const auto& [tensor, shard] : it->items()) {
    if (!shard.is_string() || !IsPlainFileName(shard.get_ref<const std::string&>())) {
      return IndexError(index_path,
                        absl::StrCat("weight_map[\"", tensor, "\"] = ",
                                     shard.dump(-1, ' ', false, json::error_handler_t::replace),
                                     " is not a plain file name inside the model directory"));
    }
    weight_map.emplace_back(tensor, shard.get<std::string>());
  }
  return weight_map;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WeightStore>> WeightStore::Open(const std::string& dir) {
  std::unique_ptr<WeightStore> store(new WeightStore());
  store->dir_ = dir;
  std::filesystem::path root(dir);
  std::string single_path = (root / kSingleFile).string();
  std::string index_path = (root / kIndexFile).string();
  std::error_code error;
  if (std::filesystem::exists(single_path, error)) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                            SafetensorsFile::Open(single_path));
    TANDEM_RETURN_IF_ERROR(store->AddFile(std::move(file), single_path));
  } else if (std::filesystem::exists(index_path, error)) {
    TANDEM_RETURN_IF_ERROR(store->AddShards(index_path));
  } else {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kSingleFile, " nor ", kIndexFile, " exists"));
  }
  return store;
}

absl::Status WeightStore::AddFile(std::unique_ptr<SafetensorsFile> file, const std::string& path) {
  for (const auto& [name, tensor] : file->tensors()) {
    if (!tensors_.emplace(name, &tensor).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor \"", name, "\" was already loaded from another shard"));
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::Status WeightStore::AddShards(const std::string& index_path) {
  TANDEM_ASSIGN_OR_RETURN(WeightMap weight_map, ReadWeightMap(index_path));
  std::map<std::string, const SafetensorsFile*> shards;  // each shard opened once
  for (const auto& [tensor, shard] : weight_map) {
    auto it = shards.find(shard);
    if (it == shards.end()) {
      std::string shard_path = (std::filesystem::path(dir_) / shard).string();
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(shard_path);
      if (!file.ok()) {
        return absl::Status(file.status().code(), absl::StrCat(index_path, ": shard \"", shard,
                                                               "\": ", file.status().message()));
      }
      it = shards.emplace(shard, file->get()).first;
      TANDEM_RETURN_IF_ERROR(AddFile(*std::move(file), shard_path));
    }
    if (!it->second->tensors().contains(tensor)) {
      return IndexError(index_path, absl::StrCat("tensor \"", tensor, "\" is mapped to shard \"",
                                                 shard, "\", which does not contain it"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<const TensorView*> WeightStore::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" not found in ", dir_));
  }
  return it->second;
}

absl::StatusOr<const TensorView*> WeightStore::Get(const std::string& name,
                                                   std::span<const int64_t> expected_shape) const {
  TANDEM_ASSIGN_OR_RETURN(const TensorView* tensor, Get(name));
  if (!std::equal(tensor->shape.begin(), tensor->shape.end(), expected_shape.begin(),
                  expected_shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" in ", dir_, " has shape ",
                                                   ShapeToString(tensor->shape), ", expected ",
                                                   ShapeToString(expected_shape)));
  }
  return tensor;
}

std::vector<std::string> WeightStore::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, tensor] : tensors_) names.push_back(name);
  return names;
}

size_t WeightStore::TotalBytes() const {
  size_t total_bytes = 0;
  for (const auto& [name, tensor] : tensors_) total_bytes += tensor->data.size();
  return total_bytes;
}

}  // namespace tandem
