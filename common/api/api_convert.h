// Conversions between the gRPC messages (tandem.v1, tandem.internal.v1) and the engine's
// plain data. Shared by the router and both workers, so every process reads a request the
// same way. Validation is SamplingParams::Validate's: errors name the field.
#pragma once

#include "absl/status/statusor.h"
#include "common/engine/engine_types.h"
#include "common/sampling/sampling_params.h"
#include "tandem/v1/tandem.pb.h"

namespace tandem {

// Unset optional fields take the documented defaults. Validates against `vocab_size`.
absl::StatusOr<SamplingParams> SamplingParamsFromProto(const v1::SamplingParams& proto,
                                                       int64_t vocab_size);
// The inverse (every field set explicitly), for router -> worker messages.
void SamplingParamsToProto(const SamplingParams& params, v1::SamplingParams* proto);

v1::FinishReason FinishReasonToProto(OutputFinish finish);
void LogprobsToProto(const SampledLogprobs& logprobs, v1::TokenLogprob* proto);
SampledLogprobs LogprobsFromProto(const v1::TokenLogprob& proto);

// A streamed engine output as a Delta (tokens, text, logprobs).
void OutputToDelta(const EngineOutput& output, v1::Delta* delta);
// The finishing fields of an engine output (finish reason, stop, score, seed, usage).
void OutputToFinished(const EngineOutput& output, v1::Finished* finished);

}  // namespace tandem
