// The coordinator's messages (migration/messages.h) as frames of the
// agents' Transfer stream (proto/agent.proto, vhostmig.agent.v1), both ways.
//
// Decoding is the first line of defence against a hostile or broken peer:
// counts and sizes are bounded here (regions, rings, extents, state chunks,
// guest state, reasons) so that nothing unbounded reaches the coordinator,
// which then checks the contents against guest memory and the device
// (page-extent digests, page ranges, flags, ring layout). Errors are
// InvalidArgument naming the field, the limit and what was found.
//
// Thread-safety: pure functions.
#ifndef VHOSTMIG_MIGRATION_AGENT_WIRE_H_
#define VHOSTMIG_MIGRATION_AGENT_WIRE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "migration/messages.h"
#include "proto/agent.pb.h"

namespace vhostmig::agent {

namespace pb = ::vhostmig::agent::v1;

// Limits on what one frame may carry.
inline constexpr uint64_t kMaxFrameBytes = 8ull << 20;  // gRPC message size
inline constexpr int kMaxRegions = 64;
inline constexpr int kMaxRings = 64;
inline constexpr int kMaxExtentsPerBatch = 1 << 16;
inline constexpr uint64_t kMaxGuestStateBytes = 1ull << 20;
inline constexpr uint64_t kMaxStateChunkBytes = 4ull << 20;
inline constexpr uint64_t kMaxReasonBytes = 4096;

// True for the frames that carry a coordinator message (not open, credit,
// started or start_failed).
bool IsMigrationFrame(const pb::TransferFrame& frame);

void EncodeMessage(const migration::MigrationMessage& message,
                   pb::TransferFrame* frame);
absl::StatusOr<migration::MigrationMessage> DecodeMessage(
    const pb::TransferFrame& frame);

}  // namespace vhostmig::agent

#endif  // VHOSTMIG_MIGRATION_AGENT_WIRE_H_
