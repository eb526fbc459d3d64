// The NCCL transport's control channel: one small TCP connection per (sender, receiver)
// pair, opened by the sender to the receiver's kv_endpoint. It carries the handshake (peer
// identities, model + KvLayout fingerprint, expected receiver incarnation, and the
// ncclUniqueId the sender made for the pair's 2-rank communicator) and then, per transfer, a
// header (sequence number, reservation, block count, units per chunk) and a trailer (the
// transfer's outcome and the first token). KV bytes never go over it: they follow the
// header on the communicator, one NCCL message per chunk; the trailer may be written before
// or after them (the first token is sampled after the forward pass whose KV is streaming).
//
// For this milestone the channel is its own TCP connection (not the gRPC control plane):
// the unique id must reach the one receiver process that will be rank 1, and the sender must
// learn at once when that process dies (the connection closes) to abort the communicator.
//
// Framing: a 4-byte little-endian length, then a message type byte and its fields
// (integers little-endian, strings length-prefixed). Frames over 64 KiB are refused.
#pragma once

#include <nccl.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kv_transfer/tcp/socket.h"

namespace tandem::nccl_control {

struct Hello {
  std::string sender_name;
  uint64_t sender_incarnation = 0;
  uint64_t expected_receiver_incarnation = 0;  // 0: any
  std::string model_fingerprint;
  std::string layout;  // KvLayout::Describe() of the sender's cache
  ncclUniqueId unique_id{};
  // Both sides then connect the pair with one 16-byte message on the communicator and
  // split a blocking child for the KV messages (NcclComm::SplitBlocking).
  bool blocking_data_communicator = false;
  // The sender's GPU (its 16-byte CUDA UUID, hex): NCCL cannot pair a GPU with itself, so
  // a receiver on the same GPU refuses with a clear error instead of NCCL's "invalid usage".
  std::string gpu_uuid;
  // Both sides register their staging with the KV communicator (NcclComm::Register): NCCL
  // then copies sender staging -> receiver staging directly (both or neither, per NCCL).
  bool register_staging = false;
  // Direct writes (NcclKvSenderOptions::direct_write): both sides register their staging
  // as an NCCL window (ncclCommWindowRegister, equal sizes) and the sender's gathers write
  // straight into the receiver's staging through the peer mapping NCCL made; no KV message
  // goes through NCCL. Used when the receiver's staging is no larger than the sender's.
  bool direct_write = false;
  uint64_t sender_staging_bytes = 0;
};

struct HelloAck {
  bool accepted = false;
  std::string error;
  uint64_t receiver_incarnation = 0;
  uint64_t max_chunk_bytes = 0;  // the receiver's staging slot: the sender's chunks fit in it
  uint64_t staging_bytes = 0;    // the receiver's whole staging ring
};

// Direct writes only. Sender -> receiver: chunk `chunk` of transfer `sequence` is in the
// receiver's staging (the gather that wrote it completed). Receiver -> sender: the scatter
// of chunk `chunk` finished, so its staging slot may be written again (sent for every
// chunk: the next transfer reuses the slots too).
struct ChunkNotice {
  uint64_t sequence = 0;
  int64_t chunk = 0;
};

struct TransferHeader {
  uint64_t sequence = 0;  // per pair, from 0; both sides check it
  std::string reservation_id;
  int32_t num_blocks = 0;
  int32_t units_per_chunk = 0;  // KvChunkPlan: chunks of (layer, block) units, any layers
  int32_t edge_units = 0;       // KvChunkPlan: graded first/last chunk; 0: uniform chunks
  int32_t ramp = 1;             // KvChunkPlan: graded edges grow by this factor
  int32_t num_tokens = 0;
};

// After every chunk of a transfer was sent: whether the KV is good and what follows it.
// A failed transfer (its forward pass failed, or it was cancelled while streaming) still
// sends all its chunks, so the pair stays in step; the receiver reports `code`/`message`.
struct TransferTrailer {
  uint64_t sequence = 0;  // the header's
  int32_t code = 0;       // absl::StatusCode
  std::string message;
  int32_t first_token_id = -1;
  float first_logprob = 0.0f;
  int32_t cached_prompt_tokens = 0;
};

// Whether a pair uses direct writes, decided alike on both sides from the Hello and the
// HelloAck: asked by the sender, a receiver ring of at least two slots (the sender writes
// chunk c + 1 while the receiver scatters chunk c), and the window, which has one size on
// both ranks (the receiver's ring), within the sender's staging.
inline bool UseDirectWrite(bool asked, uint64_t receiver_staging_bytes,
                           uint64_t receiver_slot_bytes, uint64_t sender_staging_bytes) {
  return asked && receiver_slot_bytes > 0 && receiver_staging_bytes / receiver_slot_bytes >= 2 &&
         receiver_staging_bytes <= sender_staging_bytes;
}

absl::Status Write(const tcp::Socket& socket, const Hello& hello, absl::Time deadline);
absl::Status Write(const tcp::Socket& socket, const HelloAck& ack, absl::Time deadline);
absl::Status Write(const tcp::Socket& socket, const TransferHeader& header, absl::Time deadline);
absl::Status Write(const tcp::Socket& socket, const TransferTrailer& trailer, absl::Time deadline);

absl::Status WriteChunkLanded(const tcp::Socket& socket, const ChunkNotice& notice,
                              absl::Time deadline);
absl::Status WriteSlotFree(const tcp::Socket& socket, const ChunkNotice& notice,
                           absl::Time deadline);

absl::StatusOr<Hello> ReadHello(const tcp::Socket& socket, absl::Time deadline);
absl::StatusOr<HelloAck> ReadHelloAck(const tcp::Socket& socket, absl::Time deadline);
absl::StatusOr<TransferHeader> ReadTransferHeader(const tcp::Socket& socket, absl::Time deadline);
absl::StatusOr<TransferTrailer> ReadTransferTrailer(const tcp::Socket& socket, absl::Time deadline);
absl::StatusOr<ChunkNotice> ReadChunkLanded(const tcp::Socket& socket, absl::Time deadline);
absl::StatusOr<ChunkNotice> ReadSlotFree(const tcp::Socket& socket, absl::Time deadline);

// Whether the peer closed the connection or it failed (not merely readable: a header for
// the next transfer may be waiting). Does not block.
bool PeerClosed(const tcp::Socket& socket);

}  // namespace tandem::nccl_control
