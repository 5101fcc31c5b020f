// What the migration coordinator needs from the VMM that embeds it.
//
// The coordinator drives the vhost-user back-end itself, through the
// VMM's connected vhost::Frontend (logging, ring stop and restart, device
// state, destination ring start), so it works with any back-end. What only
// the VMM knows is asked through these interfaces: where guest memory is,
// which rings it gave the device and with which notifiers, how to stop and
// resume its vCPUs, which pages its vCPUs wrote (as KVM's dirty log would
// tell QEMU), and its own small guest state.
//
// Threading: the coordinator calls these from the thread running
// SourceMigration::Run / DestinationMigration::Run, one call at a time. The
// memory maps must stay valid for the whole migration.
#ifndef VHOSTMIG_MIGRATION_VMM_H_
#define VHOSTMIG_MIGRATION_VMM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vhost/frontend/frontend.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/protocol/payloads.h"

namespace vhostmig::migration {

// A ring the VMM started on the device, as SET_VRING_NUM/ADDR/KICK/CALL
// described it (addresses are front-end addresses; flags without
// VHOST_VRING_F_LOG; log_guest_addr = the used ring's guest address).
struct RingConfig {
  uint32_t index = 0;
  uint16_t size = 0;
  vhost::VhostUserVringAddr addr{};
  int kick_fd = -1;  // borrowed
  int call_fd = -1;  // borrowed
};

class SourceVmm {
 public:
  virtual ~SourceVmm() = default;
  virtual const vhost::GuestMemoryMap& memory() const = 0;
  // Connected and configured (features acked, memory table sent, rings
  // started and enabled).
  virtual vhost::Frontend& frontend() = 0;
  virtual std::vector<RingConfig> rings() const = 0;
  // vCPUs stopped: when PauseGuest returns, the guest writes no memory and
  // makes no requests until ResumeGuest.
  virtual absl::Status PauseGuest() = 0;
  virtual absl::Status ResumeGuest() = 0;
  // Fetch-and-clear of the pages the guest itself wrote since the last
  // call, OR-ed into `bitmap` (one bit per 4 KiB page, as DirtyLog).
  // Returns the number of pages harvested.
  virtual uint64_t HarvestGuestDirty(std::vector<uint64_t>* bitmap) = 0;
  // The guest state besides memory (while paused).
  virtual absl::StatusOr<std::string> SaveGuestState() = 0;
};

class DestinationVmm {
 public:
  virtual ~DestinationVmm() = default;
  // Where pages are written; regions must match the source's layout and
  // start zero-filled (fresh memfds, as an incoming VMM allocates them):
  // the first copy of a zero page is not written (page_extent.h).
  virtual const vhost::GuestMemoryMap& memory() const = 0;
  // Connected: SET_OWNER and SET_PROTOCOL_FEATURES sent, nothing else (so
  // the device state can be loaded before SET_FEATURES / SET_MEM_TABLE).
  virtual vhost::Frontend& frontend() = 0;
  // The notifiers to start ring `index` with (borrowed fds).
  virtual absl::StatusOr<std::pair<int, int>> RingNotifiers(uint32_t index) = 0;
  // Rebuilds the guest from the migrated memory and `guest_state` (called
  // before Ready, while the source can still resume); the guest stays
  // paused.
  virtual absl::Status LoadGuestState(absl::string_view guest_state) = 0;
  // Starts the vCPUs (after the device's rings run).
  virtual absl::Status ResumeGuest() = 0;
  // The migration failed or was cancelled: release the device and guest
  // (e.g. disconnect; the back-end forgets what it loaded).
  virtual void Teardown() = 0;
};

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_VMM_H_
