// The migration stream between a SourceMigration and a DestinationMigration:
// what travels, in which order, in which direction.
//
//   source -> destination                     destination -> source
//   ---------------------                     ---------------------
//   Hello (memory layout, features, whether
//          device state follows)
//   PageBatch*  (pre-copy rounds, then the
//                final round after the stop)
//   DeviceStopped (ring layouts and bases,
//                  the VMM's guest state)
//   DeviceStateChunk* DeviceStateEnd
//                                             Ready (state loaded and checked,
//                                                    memory complete)
//   Commit (the source will never run again)
//   Abort  (either way, any time before Commit: the sender gives up; the
//           source resumes, the destination tears down)
//
// The messages are plain C++ values; a wire transport (gRPC, with the
// agents) maps each alternative to one message of its stream.
//
// Thread-safety: plain values.
#ifndef VHOSTMIG_MIGRATION_MESSAGES_H_
#define VHOSTMIG_MIGRATION_MESSAGES_H_

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "migration/page_extent.h"
#include "vhost/protocol/payloads.h"

namespace vhostmig::migration {

struct RegionDescription {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
};

struct Hello {
  std::vector<RegionDescription> regions;
  // Virtio features the source acked (without LOG_ALL): the destination
  // back-end must offer them all and gets exactly these.
  uint64_t features = 0;
  // DEVICE_STATE transfer follows (the destination must offer it).
  bool device_state = false;
};

struct PageBatch {
  uint32_t round = 0;  // 1-based; the final round after the stop is last
  std::vector<PageExtent> extents;
};

// A ring as the device saw it: the destination starts it at `base` with
// the same size and addresses (front-end addresses of the same layout).
struct RingDescription {
  uint32_t index = 0;
  uint16_t size = 0;
  vhost::VhostUserVringAddr addr{};  // flags without VHOST_VRING_F_LOG
  uint16_t base = 0;                 // GET_VRING_BASE on the source
};

struct DeviceStopped {
  std::vector<RingDescription> rings;
  // Opaque to the coordinator: what the VMM needs besides memory to rebuild
  // its guest (vCPU / driver state).
  std::string guest_state;
};

struct DeviceStateChunk {
  std::string bytes;
};

struct DeviceStateEnd {
  uint64_t total_bytes = 0;
  // CRC-32C (base/crc32c.h) of the whole stream as the source read it from
  // its back-end. Chunks are written into the destination's back-end as
  // they arrive, so a damaged chunk may be loaded; this catches it before
  // Ready, for back-ends whose own format has no checksum.
  uint32_t crc32c = 0;
};

struct Ready {};
struct Commit {};

struct Abort {
  std::string reason;
};

using MigrationMessage =
    std::variant<Hello, PageBatch, DeviceStopped, DeviceStateChunk,
                 DeviceStateEnd, Ready, Commit, Abort>;

// For error messages: "Hello", "PageBatch", ...
const char* MessageName(const MigrationMessage& message);

// Bytes a message occupies for flow control (payload bytes, at least 64).
uint64_t MessageBytes(const MigrationMessage& message);

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_MESSAGES_H_
