#include "common/backend/cuda/backend_select.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/backend/cpu/cpu_model_runner.h"
#include "common/status.h"

#if TANDEM_WITH_CUDA_BACKEND
#include "common/backend/cuda/cuda_model_runner.h"
#endif

namespace tandem {
namespace {

KvCacheView CpuView(CpuModelRunner& runner) {
  KvCacheView view{.layout = runner.kv_layout(), .num_blocks = runner.num_kv_blocks()};
  for (int64_t layer = 0; layer < runner.kv_layout().num_layers; ++layer) {
    reference::LayerKv kv = runner.layer_kv(layer);
    view.k.push_back(reinterpret_cast<std::byte*>(kv.k));
    view.v.push_back(reinterpret_cast<std::byte*>(kv.v));
  }
  return view;
}

}  // namespace

absl::StatusOr<BackendKind> ParseBackendKind(std::string_view name) {
  if (name == "cpu") return BackendKind::kCpu;
  if (name == "cuda") return BackendKind::kCuda;
  return absl::InvalidArgumentError(
      absl::StrCat("--backend must be cpu or cuda, got \"", std::string(name), "\""));
}

std::string_view BackendKindName(BackendKind kind) {
  return kind == BackendKind::kCuda ? "cuda" : "cpu";
}

bool CudaBackendCompiled() { return TANDEM_WITH_CUDA_BACKEND != 0; }

absl::Status ValidateRunnerSelection(const RunnerSelection& s) {
  if (s.backend == BackendKind::kCpu) {
    if (s.num_kv_blocks < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--num_kv_blocks must be >= 1 with --backend=cpu, got ", s.num_kv_blocks));
    }
    if (s.kv_view == KvViewKind::kDevice) {
      return absl::InvalidArgumentError(
          "--kv_transport=nccl moves KV between GPUs: it needs --backend=cuda");
    }
    return absl::OkStatus();
  }
  if (!CudaBackendCompiled()) {
    return absl::UnimplementedError(
        "--backend=cuda: this build has no CUDA backend (nvcc was not found at configure time)");
  }
  if (s.device < 0 || s.device > 1023) {
    return absl::InvalidArgumentError(absl::StrCat("--device must be in [0, 1023], got ", s.device));
  }
  if (!(s.gpu_memory_fraction > 0.0 && s.gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--gpu_memory_fraction must be in (0, 1], got ", s.gpu_memory_fraction));
  }
  if (s.num_kv_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--num_kv_blocks must be >= 0 with --backend=cuda (0: from --gpu_memory_fraction), got ",
        s.num_kv_blocks));
  }
  return absl::OkStatus();
}

absl::StatusOr<SelectedRunner> LoadSelectedRunner(const std::string& model_dir,
                                                  const RunnerSelection& s) {
  TANDEM_RETURN_IF_ERROR(ValidateRunnerSelection(s));
  SelectedRunner selected;
  if (s.backend == BackendKind::kCpu) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CpuModelRunner> runner,
                            CpuModelRunner::Load(model_dir,
                                                 {.num_kv_blocks = s.num_kv_blocks,
                                                  .block_size_tokens = s.block_size_tokens,
                                                  .num_threads = s.num_threads}));
    selected.kv_view = CpuView(*runner);
    selected.runner = std::move(runner);
    return selected;
  }
#if TANDEM_WITH_CUDA_BACKEND
  const int64_t rows = std::max<int64_t>(s.max_num_tokens, 1);
  CudaRunnerOptions options{
      .device = s.device,
      .block_size_tokens = s.block_size_tokens,
      .gpu_memory_fraction = s.gpu_memory_fraction,
      .num_kv_blocks = s.num_kv_blocks,
      .max_num_tokens = rows,
      .max_num_seqs = std::max<int64_t>(s.max_num_seqs, 1),
      // A step's logits rows: one per sequence, or every prompt row for prompt logprobs.
      .max_logits_rows = std::max<int64_t>(rows, s.max_num_seqs),
      .host_visible_kv = s.kv_view == KvViewKind::kHost};
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CudaModelRunner> runner,
                          CudaModelRunner::Load(model_dir, options));
  if (s.kv_view == KvViewKind::kHost) {
    TANDEM_ASSIGN_OR_RETURN(selected.kv_view, runner->host_kv_view());
  } else if (s.kv_view == KvViewKind::kDevice) {
    selected.kv_view = runner->device_kv_view();
  }
  selected.runner = std::move(runner);
  return selected;
#else
  return absl::UnimplementedError("--backend=cuda: this build has no CUDA backend");
#endif
}

}  // namespace tandem
