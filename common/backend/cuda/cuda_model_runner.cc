#include "common/backend/cuda/cuda_model_runner.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/backend/cuda/cuda_check.h"
#include "common/backend/cuda/kernels/add_rms_norm.h"
#include "common/backend/cuda/kernels/decode_attention.h"
#include "common/backend/cuda/kernels/embedding.h"
#include "common/backend/cuda/kernels/gemv.h"
#include "common/backend/cuda/kernels/prefill_attention.h"
#include "common/backend/cuda/kernels/rope_kv_write.h"
#include "common/backend/cuda/kernels/silu_mul.h"
#include "common/backend/cuda/kernels/skinny_gemm.h"
#include "common/backend/reference/rope.h"
#include "common/logging.h"
#include "common/status.h"

namespace tandem {
namespace {

using bf16 = __nv_bfloat16;

double GiB(size_t bytes) { return static_cast<double>(bytes) / (1u << 30); }

int32_t RoundUpPowerOfTwo(int32_t value) {
  int32_t out = 1;
  while (out < value) out *= 2;
  return out;
}

absl::Status ValidateOptions(const CudaRunnerOptions& o) {
  if (!(o.gpu_memory_fraction > 0.0 && o.gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gpu_memory_fraction must be in (0, 1], got ", o.gpu_memory_fraction));
  }
  if (o.num_kv_blocks < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_kv_blocks must be >= 0 (0: sized from gpu_memory_fraction), got ", o.num_kv_blocks));
  }
  if (o.gemv_max_rows < 0 || o.gemv_max_rows > kGemvMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat("gemv_max_rows must be in [0, ",
                                                   kGemvMaxRows, "], got ", o.gemv_max_rows));
  }
  if (o.skinny_gemm_max_rows < 0 || o.skinny_gemm_max_rows > kSkinnyGemmMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat("skinny_gemm_max_rows must be in [0, ",
                                                   kSkinnyGemmMaxRows, "], got ",
                                                   o.skinny_gemm_max_rows));
  }
  if (o.gemm_candidates < 1 || o.gemm_candidates > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("gemm_candidates must be in [1, 64], got ", o.gemm_candidates));
  }
  if (o.max_num_tokens <= 0 || o.max_num_seqs <= 0 || o.max_logits_rows <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_num_tokens, max_num_seqs and max_logits_rows must be > 0, got ", o.max_num_tokens,
        ", ", o.max_num_seqs, ", ", o.max_logits_rows));
  }
  int count = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&count));
  if (o.device < 0 || o.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("device must be in [0, ", count, "), got ", o.device));
  }
  return absl::OkStatus();
}

// Whether rows[i] == i throughout (the logits rows are the first token rows, in order).
bool FirstRowsInOrder(std::span<const int32_t> rows) {
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] != static_cast<int32_t>(i)) return false;
  }
  return true;
}

}  // namespace

// Device pointers into metadata_ for one Forward call.
struct CudaModelRunner::Batch {
  int64_t num_tokens = 0, num_seqs = 0, num_logits_rows = 0;
  int32_t max_context_len = 0;
  int32_t max_blocks = 0;  // row length of block_tables
  int32_t num_tiles = 0;   // prefill attention tiles
  // Past the last layer's K/V write only the logits rows go on (fewer of them than tokens,
  // and room to stage them; see RunModel), its attention over the tiles holding them
  // (prefill attention only; 0 tiles for decode steps).
  bool logits_rows_only = false;
  int32_t num_logits_tiles = 0;
  bool decode_only = false;
  // logits_rows[i] == i for every row: the LM head reads the first rows of hidden_ in place
  // (every decode step) instead of a gathered copy.
  bool logits_rows_in_order = false;
  const int32_t *token_ids = nullptr, *positions = nullptr, *slot_mapping = nullptr,
                *query_start = nullptr, *context_lens = nullptr, *block_tables = nullptr,
                *logits_rows = nullptr, *tiles = nullptr, *logits_tiles = nullptr;
  KvLayerProgress* kv_progress = nullptr;  // eager passes only (not captured in graphs)
};

std::string CudaMemoryReport::ToString() const {
  return absl::StrFormat(
      "KV pool: %d blocks, %d tokens, %.2f GiB; weights %.2f GiB; activations %.2f GiB; "
      "device %.2f GiB",
      num_kv_blocks, num_kv_tokens, GiB(kv_pool_bytes), GiB(weight_bytes),
      GiB(activation_bytes), GiB(device_total_bytes));
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Load(
    const std::string& model_dir, const CudaRunnerOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<WeightStore> store, WeightStore::Open(model_dir));
  return Create(config, *store, options);  // the store (and its maps) is dropped on return
}

absl::StatusOr<std::unique_ptr<CudaModelRunner>> CudaModelRunner::Create(
    const ModelConfig& config, const WeightStore& store, const CudaRunnerOptions& options) {
  TANDEM_RETURN_IF_ERROR(ValidateOptions(options));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  std::unique_ptr<CudaModelRunner> runner(new CudaModelRunner(config, options));
  TANDEM_RETURN_IF_ERROR(runner->layout_.Validate());
  TANDEM_RETURN_IF_ERROR(runner->Allocate(store));
  TANDEM_LOG(INFO) << "cuda runner on device " << options.device << ": "
                   << runner->memory_.ToString();
  return runner;
}

CudaModelRunner::CudaModelRunner(const ModelConfig& config, const CudaRunnerOptions& options)
    : config_(config), options_(options) {
  layout_ = KvLayout{.dtype = DType::kBF16,
                     .block_size_tokens = options.block_size_tokens,
                     .num_layers = config.num_layers,
                     .total_kv_heads = config.num_kv_heads,
                     .kv_head_begin = 0,
                     .num_kv_heads = config.num_kv_heads,
                     .head_dim = config.head_dim};
  max_blocks_per_seq_ = (config.max_position_embeddings + options.block_size_tokens - 1) /
                        options.block_size_tokens;
}

CudaModelRunner::~CudaModelRunner() {
  if (stream_.get() != nullptr) stream_.Synchronize();
}

absl::Status CudaModelRunner::Allocate(const WeightStore& store) {
  const ModelConfig& c = config_;
  TANDEM_ASSIGN_OR_RETURN(stream_, CudaStream::Create());
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    TANDEM_ASSIGN_OR_RETURN(CudaEvent event, CudaEvent::CreateWithoutTiming());
    layer_written_.push_back(std::move(event));
  }
  TANDEM_ASSIGN_OR_RETURN(metadata_copied_, CudaEvent::CreateWithoutTiming());
  // GEMMs of 32..64 rows (decode batches) get the fastest of cuBLASLt's first
  // gemm_candidates, timed once per row count on first use (L2 flushed between runs). On the
  // H200: b64 2k 9.42-9.47 -> 9.33 ms; at m = 8 no gain and at m = 256 the timed choice ran
  // 0.3-0.6 ms slower in the step, so other row counts keep the heuristic's first.
  TANDEM_ASSIGN_OR_RETURN(gemm_, CublasLtGemm::Create({.max_algorithms = options_.gemm_candidates,
                                                       .min_tuned_rows = 32,
                                                       .max_tuned_rows = 64}));
  TANDEM_ASSIGN_OR_RETURN(weights_, CudaWeights::Load(c, store));
  memory_.weight_bytes = weights_->device_bytes();

  std::vector<float> inv_freq = reference::RopeInverseFrequencies(c);
  TANDEM_ASSIGN_OR_RETURN(inv_freq_, DeviceBuffer::Allocate(inv_freq.size() * sizeof(float)));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpy(inv_freq_.data(), inv_freq.data(),
                                         inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice));

  const size_t t = static_cast<size_t>(options_.max_num_tokens);
  const size_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  const size_t rows = static_cast<size_t>(options_.max_logits_rows);
  const size_t seqs = static_cast<size_t>(options_.max_num_seqs);
  const size_t group = static_cast<size_t>(c.num_heads / c.num_kv_heads);
  const size_t max_tiles = (t * group + kPrefillRowsPerTile - 1) / kPrefillRowsPerTile + seqs;
  // The logits rows' tiles: a row's `group` query rows span at most
  // group / kPrefillRowsPerTile + 2 tiles.
  const size_t metadata_ints = 3 * t + 2 * seqs + 1 + seqs * max_blocks_per_seq_ + rows +
                               2 * max_tiles + 2 * rows * (group / kPrefillRowsPerTile + 2);
  struct Sized { DeviceBuffer* buffer; size_t bytes; };
  for (const Sized& s : std::initializer_list<Sized>{
           {&residual_, t * c.hidden_size * 4}, {&hidden_, t * c.hidden_size * 2},
           {&qkv_, t * (q_dim + 2 * kv_dim) * 2}, {&q_, t * q_dim * 2}, {&attn_, t * q_dim * 2},
           {&gate_up_, t * 2 * c.intermediate_size * 2},
           {&act_, t * c.intermediate_size * 2}, {&last_hidden_, rows * c.hidden_size * 2},
           {&logits_, rows * c.vocab_size * 4}, {&metadata_, metadata_ints * 4}}) {
    TANDEM_ASSIGN_OR_RETURN(*s.buffer, DeviceBuffer::Allocate(s.bytes));
    memory_.activation_bytes += s.bytes;
  }
  metadata_ints_ = metadata_ints;
  TANDEM_ASSIGN_OR_RETURN(metadata_host_, PinnedBuffer::Allocate(metadata_ints * 4));
  TANDEM_ASSIGN_OR_RETURN(logits_host_, PinnedBuffer::Allocate(rows * c.vocab_size * 4));
  if (options_.gpu_sampling) {
    // Copies are needed only when a logits row feeds several samples (n > 1) or the sampled
    // rows are not consecutive; larger batches of those are sampled in several calls.
    scratch_rows_ = std::min(options_.max_logits_rows, options_.max_num_seqs);
    TANDEM_ASSIGN_OR_RETURN(sample_scratch_,
                            DeviceBuffer::Allocate(scratch_rows_ * c.vocab_size * 4));
    memory_.activation_bytes += sample_scratch_.size_bytes();
    TANDEM_ASSIGN_OR_RETURN(
        sampler_, CudaSampler::Create({.vocab_size = c.vocab_size,
                                       .max_num_rows = static_cast<int32_t>(std::min<int64_t>(
                                           options_.max_logits_rows, kMaxSamplerRows))}));
  }

  size_t free_bytes = 0, total_bytes = 0;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  memory_.device_total_bytes = total_bytes;
  const size_t block_bytes = layout_.kv_bytes_per_block();
  int64_t num_blocks = options_.num_kv_blocks;
  if (num_blocks == 0) {
    // Everything already on the device (ours and anyone else's) counts against the budget.
    const double budget = options_.gpu_memory_fraction * static_cast<double>(total_bytes) -
                          static_cast<double>(total_bytes - free_bytes);
    num_blocks = budget > 0 ? static_cast<int64_t>(budget / static_cast<double>(block_bytes)) : 0;
    if (num_blocks < 1) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "gpu_memory_fraction=%.3f leaves no room for the KV cache: %.2f GiB of %.2f GiB "
          "already in use after weights and activations",
          options_.gpu_memory_fraction, GiB(total_bytes - free_bytes), GiB(total_bytes)));
    }
  }
  memory_.num_kv_blocks = num_blocks;
  memory_.num_kv_tokens = num_blocks * layout_.block_size_tokens;
  memory_.kv_pool_bytes = static_cast<size_t>(num_blocks) * block_bytes;
  if (options_.host_visible_kv) {
    TANDEM_ASSIGN_OR_RETURN(kv_,
                            DeviceBuffer::AllocateManaged(memory_.kv_pool_bytes, options_.device));
  } else {
    TANDEM_ASSIGN_OR_RETURN(kv_, DeviceBuffer::Allocate(memory_.kv_pool_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<KvCacheView> CudaModelRunner::host_kv_view() const {
  if (!options_.host_visible_kv) {
    return absl::FailedPreconditionError(
        "the CUDA KV pool is device memory (host_visible_kv is off): no host view");
  }
  KvCacheView view{.layout = layout_, .num_blocks = memory_.num_kv_blocks};
  for (int64_t layer = 0; layer < layout_.num_layers; ++layer) {
    PagedKvCache kv = layer_kv(layer);
    view.k.push_back(reinterpret_cast<std::byte*>(kv.k));
    view.v.push_back(reinterpret_cast<std::byte*>(kv.v));
  }
  return view;
}

KvCacheView CudaModelRunner::device_kv_view() const {
  KvCacheView view{.layout = layout_,
                   .memory = KvMemory::kCudaDevice,
                   .cuda_device = options_.device,
                   .num_blocks = memory_.num_kv_blocks};
  for (int64_t layer = 0; layer < layout_.num_layers; ++layer) {
    PagedKvCache kv = layer_kv(layer);
    view.k.push_back(reinterpret_cast<std::byte*>(kv.k));
    view.v.push_back(reinterpret_cast<std::byte*>(kv.v));
  }
  return view;
}

PagedKvCache CudaModelRunner::layer_kv(int64_t layer) const {
  const int64_t num_slots = memory_.num_kv_blocks * layout_.block_size_tokens;
  const int64_t region = num_slots * layout_.ElementsPerTokenPerLayer();
  bf16* base = kv_.as<bf16>() + 2 * layer * region;
  return {.k = base, .v = base + region, .num_slots = num_slots,
          .num_kv_heads = static_cast<int32_t>(layout_.num_kv_heads),
          .head_dim = static_cast<int32_t>(layout_.head_dim),
          .block_size = static_cast<int32_t>(layout_.block_size_tokens)};
}

absl::Status CudaModelRunner::CheckLimits(const ForwardInputs& in) const {
  auto too_many = [](const char* field, size_t got, int64_t limit, const char* option) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": at most ", limit, " per call (",
                                                   option, "), got ", got));
  };
  if (static_cast<int64_t>(in.token_ids.size()) > options_.max_num_tokens) {
    return too_many("token_ids", in.token_ids.size(), options_.max_num_tokens, "max_num_tokens");
  }
  if (static_cast<int64_t>(in.block_tables.size()) > options_.max_num_seqs) {
    return too_many("block_tables", in.block_tables.size(), options_.max_num_seqs, "max_num_seqs");
  }
  if (static_cast<int64_t>(in.logits_rows.size()) > options_.max_logits_rows) {
    return too_many("logits_rows", in.logits_rows.size(), options_.max_logits_rows,
                    "max_logits_rows");
  }
  for (const std::span<const int32_t>& table : in.block_tables) {
    if (static_cast<int64_t>(table.size()) > max_blocks_per_seq_) {
      return too_many("block_tables[s]", table.size(), max_blocks_per_seq_,
                      "max_position_embeddings / block_size_tokens");
    }
  }
  return absl::OkStatus();
}

// Packs the batch into pinned memory as int32 arrays and copies it to the device at once:
// token_ids, positions, slot_mapping [T]; query_start [S+1]; context_lens [S];
// block_tables [S][max_blocks]; logits_rows [R]; prefill tiles [num_tiles][2].
absl::StatusOr<CudaModelRunner::Batch> CudaModelRunner::UploadBatch(const ForwardInputs& in) {
  Batch b;
  b.num_tokens = static_cast<int64_t>(in.token_ids.size());
  b.num_seqs = static_cast<int64_t>(in.block_tables.size());
  b.num_logits_rows = static_cast<int64_t>(in.logits_rows.size());
  b.decode_only = b.num_tokens == b.num_seqs;
  b.logits_rows_in_order = FirstRowsInOrder(in.logits_rows);
  // CompactLogitsRows stages the rows in gate_up_ (room for any Llama shape: 4 x
  // intermediate >= 4 x hidden + 2 x q_dim); a shape without room runs every row.
  const size_t staged_row_bytes = config_.hidden_size * sizeof(float) +
                                  config_.num_heads * config_.head_dim * sizeof(bf16);
  b.logits_rows_only = b.num_logits_rows < b.num_tokens &&
                       b.num_logits_rows * staged_row_bytes <= gate_up_.size_bytes();
  for (const std::span<const int32_t>& table : in.block_tables) {
    b.max_blocks = std::max(b.max_blocks, static_cast<int32_t>(table.size()));
  }
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(metadata_copied_.get()));
  int32_t* host = metadata_host_.as<int32_t>();
  const int32_t* device = metadata_.as<int32_t>();
  size_t at = 0;
  auto put = [&](std::span<const int32_t> values) {
    std::copy(values.begin(), values.end(), host + at);
    const int32_t* where = device + at;
    at += values.size();
    return where;
  };
  b.token_ids = put(in.token_ids);
  b.positions = put(in.positions);
  b.slot_mapping = put(in.slot_mapping);
  b.query_start = put(in.query_start);
  b.context_lens = device + at;
  for (int64_t s = 0; s < b.num_seqs; ++s) {
    const int32_t context = in.positions[in.query_start[s + 1] - 1] + 1;
    b.max_context_len = std::max(b.max_context_len, context);
    host[at++] = context;
  }
  b.block_tables = device + at;
  for (const std::span<const int32_t>& table : in.block_tables) {
    std::fill(std::copy(table.begin(), table.end(), host + at), host + at + b.max_blocks, 0);
    at += b.max_blocks;
  }
  b.logits_rows = put(in.logits_rows);
  if (!b.decode_only) {
    const int32_t group = static_cast<int32_t>(config_.num_heads / config_.num_kv_heads);
    std::vector<int32_t> tiles = BuildPrefillTiles(in.query_start.data(),
                                                   static_cast<int32_t>(b.num_seqs), group);
    b.num_tiles = static_cast<int32_t>(tiles.size() / 2);
    b.tiles = put(tiles);
    if (b.logits_rows_only && b.num_logits_rows > 0) {
      std::vector<int32_t> logits_tiles = BuildPrefillTilesForTokens(
          in.query_start.data(), static_cast<int32_t>(b.num_seqs), group,
          in.logits_rows.data(), static_cast<int32_t>(b.num_logits_rows));
      b.num_logits_tiles = static_cast<int32_t>(logits_tiles.size() / 2);
      b.logits_tiles = put(logits_tiles);
    }
  }
  TANDEM_CHECK(at <= metadata_ints_) << "metadata overflow: " << at;
  TANDEM_RETURN_IF_ERROR(CopyMetadata(at));
  return b;
}

absl::Status CudaModelRunner::CopyMetadata(size_t ints) {
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(metadata_.data(), metadata_host_.data(), ints * 4,
                                              cudaMemcpyHostToDevice, stream_.get()));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(metadata_copied_.get(), stream_.get()));
  return absl::OkStatus();
}

absl::StatusOr<CudaModelRunner::Batch> CudaModelRunner::UploadPaddedDecodeBatch(
    const ForwardInputs& in, int32_t seqs, int32_t blocks) {
  Batch b;
  b.num_tokens = b.num_seqs = b.num_logits_rows = seqs;
  b.max_blocks = blocks;
  b.max_context_len = blocks * static_cast<int32_t>(layout_.block_size_tokens);
  b.decode_only = true;
  const int32_t real = static_cast<int32_t>(in.token_ids.size());
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(metadata_copied_.get()));
  int32_t* host = metadata_host_.as<int32_t>();
  const int32_t* device = metadata_.as<int32_t>();
  size_t at = 0;
  // Padding rows: token 0 at position 0, no KV write (slot -1), context 0 (zero attention
  // output), logits of row 0, or of their own row where the real rows are in order
  // (computed, never copied out).
  auto put = [&](std::span<const int32_t> values, int32_t pad) {
    std::copy(values.begin(), values.end(), host + at);
    std::fill(host + at + values.size(), host + at + seqs, pad);
    const int32_t* where = device + at;
    at += seqs;
    return where;
  };
  b.token_ids = put(in.token_ids, 0);
  b.positions = put(in.positions, 0);
  b.slot_mapping = put(in.slot_mapping, -1);
  b.query_start = device + at;
  for (int32_t s = 0; s <= seqs; ++s) host[at++] = s;
  b.context_lens = device + at;
  for (int32_t s = 0; s < seqs; ++s) host[at++] = s < real ? in.positions[s] + 1 : 0;
  b.block_tables = device + at;
  for (int32_t s = 0; s < seqs; ++s) {
    int32_t* row = host + at;
    if (s < real) {
      const std::span<const int32_t>& table = in.block_tables[s];
      std::fill(std::copy(table.begin(), table.end(), row), row + blocks, 0);
    } else {
      std::fill(row, row + blocks, 0);
    }
    at += blocks;
  }
  b.logits_rows_in_order = FirstRowsInOrder(in.logits_rows);
  b.logits_rows = device + at;
  std::copy(in.logits_rows.begin(), in.logits_rows.end(), host + at);
  for (int32_t s = static_cast<int32_t>(in.logits_rows.size()); s < seqs; ++s) {
    host[at + s] = b.logits_rows_in_order ? s : 0;
  }
  at += seqs;
  TANDEM_CHECK(at <= metadata_ints_) << "metadata overflow: " << at;
  TANDEM_RETURN_IF_ERROR(CopyMetadata(at));
  return b;
}

int64_t CudaModelRunner::num_cuda_graphs() const {
  int64_t count = 0;
  for (const auto& [key, entry] : graphs_) count += entry.exec.get() != nullptr ? 1 : 0;
  return count;
}

// A decode step through its bucket's graph: eager the first time, captured the second.
absl::Status CudaModelRunner::RunDecodeGraph(const ForwardInputs& in, Batch& batch) {
  const auto cap = static_cast<int32_t>(
      std::min({options_.max_num_seqs, options_.max_num_tokens, options_.max_logits_rows}));
  const int32_t seqs = std::min(cap, RoundUpPowerOfTwo(static_cast<int32_t>(in.token_ids.size())));
  int32_t longest = 1;
  for (const std::span<const int32_t>& table : in.block_tables) {
    longest = std::max(longest, static_cast<int32_t>(table.size()));
  }
  const int32_t blocks =
      std::min(static_cast<int32_t>(max_blocks_per_seq_), RoundUpPowerOfTwo(longest));
  TANDEM_ASSIGN_OR_RETURN(batch, UploadPaddedDecodeBatch(in, seqs, blocks));
  TANDEM_RETURN_IF_ERROR(FeedSampledTokens(batch));  // before the graph reads the ids
  GraphEntry& entry = graphs_[{seqs, blocks, batch.logits_rows_in_order}];
  if (entry.exec.get() == nullptr) {
    if (!entry.warmed) {
      entry.warmed = true;
      return RunModel(batch);
    }
    TANDEM_ASSIGN_OR_RETURN(entry.exec, CudaGraphExec::Capture(stream_.get(), [&] {
                              return RunModel(batch);
                            }));
  }
  return entry.exec.Launch(stream_.get());
}

absl::StatusOr<LogitsView> CudaModelRunner::Forward(const ForwardInputs& inputs) {
  const int64_t num_fed_rows =
      sampler_ == nullptr ? num_pending_sampled_rows() : std::max<int64_t>(pending_rows_, 0);
  TANDEM_RETURN_IF_ERROR(ValidateForwardInputs(inputs, memory_.num_kv_blocks,
                                               layout_.block_size_tokens,
                                               config_.max_position_embeddings,
                                               config_.vocab_size, num_fed_rows));
  TANDEM_RETURN_IF_ERROR(CheckLimits(inputs));
  // Fed ids (FedTokenId) are resolved on the device from the pending GPU sampling, or here
  // when its tokens are already on the host.
  feed_on_device_ = false;
  ForwardInputs resolved;
  const ForwardInputs* use = &inputs;
  if (std::any_of(inputs.token_ids.begin(), inputs.token_ids.end(),
                  [](int32_t id) { return id < 0; })) {
    if (sampler_ != nullptr && !pending_host_tokens_) {
      feed_on_device_ = true;
    } else {
      if (sampler_ == nullptr) {
        TANDEM_RETURN_IF_ERROR(ResolveFedTokens(inputs.token_ids, fed_ids_));
      } else {
        fed_ids_.assign(inputs.token_ids.begin(), inputs.token_ids.end());
        for (int32_t& id : fed_ids_) {
          if (id < 0) id = (*pending_host_tokens_)[FedTokenRow(id)].token_id;
        }
      }
      resolved = inputs;
      resolved.token_ids = fed_ids_;
      use = &resolved;
    }
  }
  const ForwardInputs& in = *use;
  LogitsView view{.values = {}, .num_rows = static_cast<int64_t>(in.logits_rows.size()),
                  .vocab_size = config_.vocab_size};
  if (in.token_ids.empty()) return view;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  Batch batch;
  if (options_.use_cuda_graphs && in.token_ids.size() == in.block_tables.size()) {
    TANDEM_RETURN_IF_ERROR(RunDecodeGraph(in, batch));
  } else {
    TANDEM_ASSIGN_OR_RETURN(batch, UploadBatch(in));
    TANDEM_RETURN_IF_ERROR(FeedSampledTokens(batch));
    batch.kv_progress = in.kv_progress;
    TANDEM_RETURN_IF_ERROR(RunModel(batch));
  }
  // Only the requested rows come back (the first rows of the gathered logits), and only
  // when the caller reads them on the host or they will be sampled there.
  const bool to_host = in.logits_on_host || sampler_ == nullptr;
  if (view.num_rows > 0 && to_host) {
    logits_counts_.host_rows += view.num_rows;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        logits_host_.data(), logits_.data(),
        static_cast<size_t>(view.num_rows * view.vocab_size) * sizeof(float),
        cudaMemcpyDeviceToHost, stream_.get()));
  }
  // Logits left for the GPU sampler: it runs on this stream after the pass, and its host
  // side is prepared while the GPU works (SampleLogits synchronizes).
  const bool sampled_next = view.num_rows > 0 && !to_host && in.kv_progress == nullptr &&
                            !options_.host_visible_kv;
  if (!sampled_next) TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
  if (to_host) {
    view.values = std::span<const float>(logits_host_.as<float>(),
                                         static_cast<size_t>(view.num_rows * view.vocab_size));
  }
  return view;
}

absl::Status CudaModelRunner::FeedSampledTokens(const Batch& batch) {
  if (!feed_on_device_) return absl::OkStatus();
  const SamplingRowResult* results = sampler_->device_results();
  return LaunchResolveFedTokens(
      {.token_ids = const_cast<int32_t*>(batch.token_ids),  // metadata_, ours to edit
       .num_tokens = batch.num_tokens,
       .sampled = &results->token,
       .sampled_stride = sizeof(SamplingRowResult) / sizeof(int32_t)},
      stream_.get());
}

absl::Status CudaModelRunner::RunModel(const Batch& batch) {
  const ModelConfig& c = config_;
  TANDEM_RETURN_IF_ERROR(LaunchEmbeddingGather(
      {.table = weights_->embed_tokens(), .token_ids = batch.token_ids,
       .vocab_size = c.vocab_size, .dim = c.hidden_size, .num_tokens = batch.num_tokens},
      residual_.as<float>(), stream_.get()));
  const int64_t q_dim = c.num_heads * c.head_dim, last = c.num_layers - 1;
  // A layer after its attention: the o projection into the residual, then the MLP.
  auto after_attention = [&](int64_t layer, const Batch& b) -> absl::Status {
    TANDEM_RETURN_IF_ERROR(GemmIntoResidual(attn_.as<bf16>(), b.num_tokens, q_dim,
                                            weights_->layers()[layer].o_proj));
    return MlpBlock(layer, b);
  };
  for (int64_t layer = 0; layer < last; ++layer) {
    TANDEM_RETURN_IF_ERROR(AttentionBlock(layer, batch, /*attend=*/true));
    TANDEM_RETURN_IF_ERROR(after_attention(layer, batch));
  }
  if (!batch.logits_rows_only) {
    TANDEM_RETURN_IF_ERROR(AttentionBlock(last, batch, /*attend=*/true));
    TANDEM_RETURN_IF_ERROR(after_attention(last, batch));
    return ComputeLogits(batch);
  }
  // Past the last layer's K/V write only the logits rows matter: a pass without logits (a
  // prompt chunk before the last) stops there; one with fewer logits rows than tokens (a
  // prompt's last chunk) attends over their tiles only and carries just those rows through
  // the o projection, the MLP and the final norm.
  if (batch.num_logits_rows == 0) return AttentionBlock(last, batch, /*attend=*/false);
  Batch attending = batch;
  if (batch.num_logits_tiles > 0) {
    attending.tiles = batch.logits_tiles;
    attending.num_tiles = batch.num_logits_tiles;
  }
  TANDEM_RETURN_IF_ERROR(AttentionBlock(last, attending, /*attend=*/true));
  TANDEM_ASSIGN_OR_RETURN(Batch rows, CompactLogitsRows(batch));
  TANDEM_RETURN_IF_ERROR(after_attention(last, rows));
  return ComputeLogits(rows);
}

// Moves the logits rows of the residual stream and of the attention output to their first
// rows (through gate_up_, free at this point of a layer) and returns the batch of just those
// rows, in order.
absl::StatusOr<CudaModelRunner::Batch> CudaModelRunner::CompactLogitsRows(const Batch& b) {
  const ModelConfig& c = config_;
  const int64_t rows = b.num_logits_rows;
  const size_t residual_bytes = rows * c.hidden_size * sizeof(float);
  const size_t attn_bytes = rows * c.num_heads * c.head_dim * sizeof(bf16);
  char* staged = gate_up_.as<char>();
  for (auto [buffer, bytes] : {std::pair{&residual_, residual_bytes}, {&attn_, attn_bytes}}) {
    TANDEM_RETURN_IF_ERROR(LaunchGatherRows(
        {.in = buffer->data(), .rows = b.logits_rows, .out = staged, .num_rows = rows,
         .row_bytes = static_cast<int64_t>(bytes / rows)},
        stream_.get()));
    TANDEM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(buffer->data(), staged, bytes, cudaMemcpyDeviceToDevice, stream_.get()));
  }
  Batch compact = b;
  compact.num_tokens = rows;
  compact.logits_rows_in_order = true;
  return compact;
}

absl::Status CudaModelRunner::CopyBlocks(std::span<const BlockCopy> copies) {
  for (const BlockCopy& copy : copies) {
    if (copy.src < 0 || copy.src >= memory_.num_kv_blocks || copy.dst < 0 ||
        copy.dst >= memory_.num_kv_blocks) {
      return absl::InvalidArgumentError(absl::StrCat(
          "copies: block ids must be in [0, ", memory_.num_kv_blocks, "), got ", copy.src,
          " -> ", copy.dst));
    }
  }
  if (copies.empty()) return absl::OkStatus();
  TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  const int64_t num_slots = memory_.num_kv_blocks * layout_.block_size_tokens;
  const int64_t per_token = layout_.ElementsPerTokenPerLayer();
  const size_t per_call = metadata_ints_ / 2;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(metadata_copied_.get()));
  for (size_t first = 0; first < copies.size(); first += per_call) {
    const size_t count = std::min(per_call, copies.size() - first);
    int32_t* host = metadata_host_.as<int32_t>();
    for (size_t i = 0; i < count; ++i) {
      host[2 * i] = static_cast<int32_t>(copies[first + i].src);
      host[2 * i + 1] = static_cast<int32_t>(copies[first + i].dst);
    }
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(metadata_.data(), host, count * 8,
                                                cudaMemcpyHostToDevice, stream_.get()));
    TANDEM_RETURN_IF_ERROR(LaunchCopyKvBlocks(
        {.cache = kv_.as<bf16>(), .num_regions = 2 * config_.num_layers,
         .region_elements = num_slots * per_token,
         .block_elements = layout_.block_size_tokens * per_token,
         .pairs = metadata_.as<int32_t>(), .num_copies = static_cast<int32_t>(count)},
        stream_.get()));
    // The pinned staging buffer is reused by the next chunk or Forward.
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
  }
  return absl::OkStatus();
}

bool CudaModelRunner::UsesGemv(const GemmArgs& args) const {
  return args.m <= options_.gemv_max_rows && GemvSupports(args);
}

bool CudaModelRunner::UsesSkinnyGemm(const GemmArgs& args) const {
  return !UsesGemv(args) && args.m <= options_.skinny_gemm_max_rows && SkinnyGemmSupports(args);
}

absl::Status CudaModelRunner::MatMul(const GemmArgs& args) {
  if (UsesGemv(args)) return LaunchGemv(args, stream_.get());
  if (UsesSkinnyGemm(args)) return LaunchSkinnyGemm(args, stream_.get());
  return gemm_->MatMulTransposed(args, stream_.get());
}

absl::Status CudaModelRunner::Gemm(const bf16* a, int64_t m, int64_t k, const bf16* w,
                                   int64_t n, void* out, GemmOutput output) {
  return MatMul({.a = a, .w = w, .out = out, .m = m, .n = n, .k = k, .ldc = 0,
                 .output = output});
}

// residual[m][n] += a · wᵀ in the GEMM epilogue (fp32): no bf16 rounding of the branch
// output before it joins the residual stream, and no separate add kernel.
absl::Status CudaModelRunner::GemmIntoResidual(const bf16* a, int64_t m, int64_t k,
                                               const bf16* w) {
  return MatMul({.a = a, .w = w, .out = residual_.data(), .m = m, .n = config_.hidden_size,
                 .k = k, .ldc = 0, .output = GemmOutput::kF32, .accumulate = true});
}

// hidden = RMSNorm(residual) over `rows` rows (the residual adds happen in the GEMMs).
absl::Status CudaModelRunner::Norm(const bf16* weight, int64_t rows) {
  if (skip_kernels_ & kSkipNorms) return absl::OkStatus();
  return LaunchAddRmsNorm({.residual = residual_.as<float>(), .x = nullptr, .weight = weight,
                           .out = hidden_.as<bf16>(), .num_rows = rows,
                           .dim = config_.hidden_size, .eps = config_.rms_norm_eps},
                          stream_.get());
}

absl::Status CudaModelRunner::AttentionBlock(int64_t layer, const Batch& b, bool attend) {
  const ModelConfig& c = config_;
  const CudaLayerWeights& w = weights_->layers()[layer];
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  TANDEM_RETURN_IF_ERROR(Norm(w.input_norm, b.num_tokens));
  TANDEM_RETURN_IF_ERROR(Gemm(hidden_.as<bf16>(), b.num_tokens, c.hidden_size, w.qkv_proj,
                              q_dim + 2 * kv_dim, qkv_.data(), GemmOutput::kBF16));
  // Decode steps fuse RoPE + KV write into the attention kernel (one launch fewer per
  // layer); prefill, and eager passes that report each layer's KV, keep the kernel.
  const bool fused_rope = b.decode_only && b.kv_progress == nullptr;
  if (!fused_rope) {
    TANDEM_RETURN_IF_ERROR(LaunchRopeKvWrite(
        {.qkv = qkv_.as<bf16>(), .q_out = q_.as<bf16>(), .positions = b.positions,
         .slot_mapping = b.slot_mapping, .inv_freq = inv_freq_.as<float>(),
         .num_tokens = b.num_tokens, .num_heads = static_cast<int32_t>(c.num_heads),
         .cache = layer_kv(layer)},
        stream_.get()));
  }
  if (b.kv_progress != nullptr) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(layer_written_[layer].get(), stream_.get()));
    b.kv_progress->LayerWritten(layer, layer_written_[layer].get());
  }
  if ((attend || fused_rope) && !(skip_kernels_ & kSkipAttention)) {
    TANDEM_RETURN_IF_ERROR(Attention(layer, b, fused_rope));
  }
  return absl::OkStatus();
}

absl::Status CudaModelRunner::Attention(int64_t layer, const Batch& b, bool fused_rope) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  const int32_t num_heads = static_cast<int32_t>(config_.num_heads);
  if (b.decode_only) {
    DecodeAttentionArgs args{
        .q = q_.as<bf16>(), .out = attn_.as<bf16>(), .context_lens = b.context_lens,
        .block_tables = b.block_tables, .num_seqs = static_cast<int32_t>(b.num_seqs),
        .num_heads = num_heads, .max_blocks_per_seq = b.max_blocks,
        .max_context_len = b.max_context_len, .scale = scale, .cache = layer_kv(layer)};
    if (fused_rope) {
      args.q = nullptr;
      args.qkv = qkv_.as<bf16>();
      args.positions = b.positions;
      args.slot_mapping = b.slot_mapping;
      args.inv_freq = inv_freq_.as<float>();
    }
    return LaunchDecodeAttention(args, stream_.get());
  }
  return LaunchPrefillAttention(
      {.q = q_.as<bf16>(), .out = attn_.as<bf16>(), .positions = b.positions,
       .query_start = b.query_start, .block_tables = b.block_tables, .tiles = b.tiles,
       .num_tiles = b.num_tiles, .num_heads = num_heads, .max_blocks_per_seq = b.max_blocks,
       .scale = scale, .cache = layer_kv(layer)},
      stream_.get());
}

absl::Status CudaModelRunner::MlpBlock(int64_t layer, const Batch& b) {
  const ModelConfig& c = config_;
  const CudaLayerWeights& w = weights_->layers()[layer];
  TANDEM_RETURN_IF_ERROR(Norm(w.post_attention_norm, b.num_tokens));
  const GemmArgs fused{.a = hidden_.as<bf16>(), .w = w.gate_up_proj, .out = act_.data(),
                       .m = b.num_tokens, .n = 2 * c.intermediate_size, .k = c.hidden_size,
                       .ldc = 0, .output = GemmOutput::kSiluMulBf16};
  if (UsesOwnKernel(fused)) {
    // SiLU·mul in the GEMV's or skinny GEMM's epilogue: no gate_up round trip, one launch
    // fewer.
    TANDEM_RETURN_IF_ERROR(MatMul(fused));
    return GemmIntoResidual(act_.as<bf16>(), b.num_tokens, c.intermediate_size, w.down_proj);
  }
  TANDEM_RETURN_IF_ERROR(Gemm(hidden_.as<bf16>(), b.num_tokens, c.hidden_size, w.gate_up_proj,
                              2 * c.intermediate_size, gate_up_.data(), GemmOutput::kBF16));
  if (!(skip_kernels_ & kSkipSiluMul)) {
    TANDEM_RETURN_IF_ERROR(LaunchSiluMul({.gate_up = gate_up_.as<bf16>(), .out = act_.as<bf16>(),
                                          .num_rows = b.num_tokens,
                                          .dim = c.intermediate_size},
                                         stream_.get()));
  }
  return GemmIntoResidual(act_.as<bf16>(), b.num_tokens, c.intermediate_size, w.down_proj);
}

// Final norm, the requested rows gathered and the LM head in fp32 output (Forward copies
// the rows to pinned host memory).
absl::Status CudaModelRunner::ComputeLogits(const Batch& b) {
  const ModelConfig& c = config_;
  if (b.num_logits_rows == 0) return absl::OkStatus();
  TANDEM_RETURN_IF_ERROR(Norm(weights_->final_norm(), b.num_tokens));
  const bf16* rows = hidden_.as<bf16>();
  if (!b.logits_rows_in_order) {
    TANDEM_RETURN_IF_ERROR(LaunchEmbeddingGather(
        {.table = hidden_.as<bf16>(), .token_ids = b.logits_rows, .vocab_size = b.num_tokens,
         .dim = c.hidden_size, .num_tokens = b.num_logits_rows},
        last_hidden_.as<bf16>(), stream_.get()));
    rows = last_hidden_.as<bf16>();
  }
  return Gemm(rows, b.num_logits_rows, c.hidden_size, weights_->lm_head(), c.vocab_size,
              logits_.data(), GemmOutput::kF32);
}

}  // namespace tandem
