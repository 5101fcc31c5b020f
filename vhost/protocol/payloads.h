// Wire layouts of vhost-user message payloads (vhost-user.rst, "Payload"),
// in machine byte order, exactly as they travel after the 12-byte header.
//
// Where a kernel struct in linux/vhost_types.h has the same layout it is used
// directly (vhost_vring_state, vhost_vring_addr, vhost_iotlb_msg); the rest
// are declared here with explicit padding so that sizeof() is the wire size
// and a memcpy of a struct never sends uninitialised bytes. Variable-sized
// payloads (memory table, config space) have encode/decode helpers in
// message.h.
#ifndef VHOSTMIG_VHOST_PROTOCOL_PAYLOADS_H_
#define VHOSTMIG_VHOST_PROTOCOL_PAYLOADS_H_

// linux/virtio_ring.h's legacy helpers are not valid C++.
#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/vhost_types.h>

#include <cstddef>
#include <cstdint>

namespace vhostmig::vhost {

// --- Header ---------------------------------------------------------------

struct VhostUserHeader {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;  // payload bytes that follow
};
static_assert(sizeof(VhostUserHeader) == 12);

inline constexpr uint32_t kVersionMask = 0x3;
inline constexpr uint32_t kVersion1 = 0x1;
inline constexpr uint32_t kFlagReply = 0x4;
inline constexpr uint32_t kFlagNeedReply = 0x8;
// Bits above NEED_REPLY are reserved and must be zero.
inline constexpr uint32_t kReservedFlagsMask = ~uint32_t{0xf};

// Our bound on a payload: the largest legal one is a config access
// (12 + 256 bytes) or a full memory table (8 + 8 * 32); 4 KiB leaves room and
// matches what other implementations accept.
inline constexpr uint32_t kMaxPayloadSize = 4096;
// At most 8 fds ride on one message (one per memory region).
inline constexpr size_t kMaxFds = 8;

// --- Simple payloads --------------------------------------------------------

// SET_VRING_NUM, SET/GET_VRING_BASE, SET_VRING_ENABLE, SET_VRING_ENDIAN,
// VRING_KICK: {u32 index; u32 num}.
using VhostUserVringState = vhost_vring_state;
static_assert(sizeof(VhostUserVringState) == 8);

// SET_VRING_ADDR: {u32 index; u32 flags; u64 desc; u64 used; u64 avail;
// u64 log}. Ring addresses are front-end virtual addresses; `log` is the
// guest physical address of the used ring, used when kVringAddrFlagLog is
// set ("Migration" section).
using VhostUserVringAddr = vhost_vring_addr;
static_assert(sizeof(VhostUserVringAddr) == 40);
static_assert(offsetof(vhost_vring_addr, desc_user_addr) == 8);
static_assert(offsetof(vhost_vring_addr, used_user_addr) == 16);
static_assert(offsetof(vhost_vring_addr, avail_user_addr) == 24);
static_assert(offsetof(vhost_vring_addr, log_guest_addr) == 32);
inline constexpr uint32_t kVringAddrFlagLog = 1u << VHOST_VRING_F_LOG;

// IOTLB_MSG.
using VhostUserIotlb = vhost_iotlb_msg;
static_assert(sizeof(VhostUserIotlb) == 32);

// SET_VRING_KICK / CALL / ERR carry a u64: bits 0-7 are the ring index, bit
// 8 says "no fd in the ancillary data" (polling).
inline constexpr uint64_t kVringIndexMask = 0xff;
inline constexpr uint64_t kVringNoFdFlag = 0x100;

// --- Memory ----------------------------------------------------------------

// One region of SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG. The fourth field
// is an mmap offset into the region's fd, so linux's vhost_memory_region
// (flags_padding there) is not the same thing.
struct VhostUserMemoryRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
};
static_assert(sizeof(VhostUserMemoryRegion) == 32);

// SET_MEM_TABLE: this header, then num_regions regions, one fd each.
struct VhostUserMemoryHeader {
  uint32_t num_regions = 0;
  uint32_t padding = 0;
};
static_assert(sizeof(VhostUserMemoryHeader) == 8);
inline constexpr uint32_t kMaxMemoryRegions = 8;

// ADD_MEM_REG / REM_MEM_REG.
struct VhostUserSingleMemoryRegion {
  uint64_t padding = 0;
  VhostUserMemoryRegion region;
};
static_assert(sizeof(VhostUserSingleMemoryRegion) == 40);

// SET_LOG_BASE with LOG_SHMFD: the log is `size` bytes at `offset` of the fd.
struct VhostUserLog {
  uint64_t size = 0;
  uint64_t offset = 0;
};
static_assert(sizeof(VhostUserLog) == 16);

// GET/SET_INFLIGHT_FD. The C struct ends with two u16; its size is rounded
// up to 24 by alignment, which is what QEMU and rust-vmm put on the wire.
struct VhostUserInflight {
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
  uint16_t num_queues = 0;
  uint16_t queue_size = 0;
  uint32_t padding = 0;
};
static_assert(sizeof(VhostUserInflight) == 24);

// --- Config space ------------------------------------------------------------

// GET/SET_CONFIG: this header, then `size` bytes of config space.
struct VhostUserConfigHeader {
  uint32_t offset = 0;
  uint32_t size = 0;
  uint32_t flags = 0;
};
static_assert(sizeof(VhostUserConfigHeader) == 12);
inline constexpr uint32_t kMaxConfigSize = 256;
inline constexpr uint32_t kConfigFlagWritable = 0;
inline constexpr uint32_t kConfigFlagLiveMigration = 1;

// --- Shared objects ---------------------------------------------------------

// GET_SHARED_OBJECT and BACKEND_SHARED_OBJECT_*: a 16-byte UUID.
struct VhostUserShared {
  uint8_t uuid[16] = {};
};
static_assert(sizeof(VhostUserShared) == 16);

// --- Device state (DEVICE_STATE) -------------------------------------------

// SET_DEVICE_STATE_FD: transfer direction and migration phase.
struct VhostUserDeviceStateParams {
  uint32_t direction = 0;
  uint32_t phase = 0;
};
static_assert(sizeof(VhostUserDeviceStateParams) == 8);

enum class TransferDirection : uint32_t {
  kSave = 0,  // back-end -> front-end (source)
  kLoad = 1,  // front-end -> back-end (destination)
};
enum class MigrationPhase : uint32_t {
  kStopped = 0,  // the only phase the spec defines so far
};

// SET_DEVICE_STATE_FD reply u64: bits 0-7 are an error code, bit 8 set means
// "no fd returned, use the one you sent".
inline constexpr uint64_t kDeviceStateErrorMask = 0xff;
inline constexpr uint64_t kDeviceStateNoFdFlag = 0x100;

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_PROTOCOL_PAYLOADS_H_
