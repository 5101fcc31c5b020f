// Device-level steps both sides of a migration send through a
// vhost::Frontend: starting a ring at a given base (the destination's start
// and the source's restart after a cancel), and ring addresses with or
// without the LOG flag. (The SET_DEVICE_STATE_FD pipe is in
// vhost/frontend/state_pipe.h.)
//
// Thread-safety: free functions; the Frontend serializes requests.
#ifndef VHOSTMIG_MIGRATION_DEVICE_CONTROL_H_
#define VHOSTMIG_MIGRATION_DEVICE_CONTROL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "vhost/frontend/frontend.h"
#include "vhost/protocol/payloads.h"

namespace vhostmig::migration {

// SET_VRING_ADDR with `addr`, its VHOST_VRING_F_LOG flag set or cleared
// (vhost-user.rst, "Migration": log_guest_addr is used only with the flag).
absl::Status SetRingAddr(vhost::Frontend& frontend,
                         vhost::VhostUserVringAddr addr, bool log);

// SET_VRING_NUM, SET_VRING_BASE(base), SET_VRING_ADDR, SET_VRING_CALL,
// SET_VRING_KICK (which starts the ring: "Starting and stopping rings") and,
// with PROTOCOL_FEATURES acked, SET_VRING_ENABLE(1).
absl::Status StartRing(vhost::Frontend& frontend, uint16_t size,
                       const vhost::VhostUserVringAddr& addr, uint16_t base,
                       int kick_fd, int call_fd, bool log);

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_DEVICE_CONTROL_H_
