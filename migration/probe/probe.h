// Probe: what a vhost-user back-end offers and whether it can be migrated,
// found by talking to it as a front-end (the `vhostmig probe` subcommand).
//
// The probe only negotiates what reading requires (SET_OWNER, and the MQ,
// CONFIG and CONFIGURE_MEM_SLOTS protocol features when offered); it sets
// up no memory and no rings.
//
// Migratability (vhost-user.rst, "Migration"): the back-end must log its
// writes to guest memory, which takes VHOST_F_LOG_ALL and LOG_SHMFD; a
// device with internal state (virtio-fs: its inode and handle tables) also
// needs DEVICE_STATE to hand that state over.
#ifndef VHOSTMIG_MIGRATION_PROBE_PROBE_H_
#define VHOSTMIG_MIGRATION_PROBE_PROBE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vhost/frontend/frontend.h"

namespace vhostmig::migration {

struct ProbeReport {
  uint64_t features = 0;
  uint64_t protocol_features = 0;
  std::optional<uint64_t> queue_num;      // with MQ
  std::optional<uint64_t> max_mem_slots;  // with CONFIGURE_MEM_SLOTS
  // With CONFIG: the first bytes of config space, read as virtio-fs's
  // {char tag[36]; u32 num_request_queues}.
  std::optional<std::string> fs_tag;
  std::optional<uint32_t> fs_num_request_queues;
  std::string config_error;  // why config could not be read, if it failed

  bool dirty_logging = false;  // LOG_ALL and LOG_SHMFD
  bool device_state = false;   // DEVICE_STATE
  bool migratable = false;     // dirty logging (+ device state if stateful)
  std::string reason;          // one line explaining `migratable`
};

// Probes the back-end behind `frontend` (freshly connected).
absl::StatusOr<ProbeReport> Probe(vhost::Frontend& frontend);

std::string FormatText(const ProbeReport& report);
std::string FormatJson(const ProbeReport& report);

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_PROBE_PROBE_H_
