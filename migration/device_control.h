// Device-level steps both sides of a migration send through a
// vhost::Frontend: starting a ring at a given base (the destination's start
// and the source's restart after a cancel), ring addresses with or without
// the LOG flag, and the pipe plumbing of SET_DEVICE_STATE_FD.
//
// Thread-safety: free functions; the Frontend serializes requests.
#ifndef VHOSTMIG_MIGRATION_DEVICE_CONTROL_H_
#define VHOSTMIG_MIGRATION_DEVICE_CONTROL_H_

#include <signal.h>

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
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

// A close-on-exec pipe: {read end, write end}.
absl::StatusOr<std::pair<UniqueFd, UniqueFd>> MakePipe();

// Waits until `fd` is ready for `events` or `deadline` passes
// (DeadlineExceeded naming `what`).
absl::Status PollUntil(int fd, short events, absl::Time deadline,
                       absl::string_view what);

// Writes all of `bytes` to the non-blocking `fd` by `deadline`; EPIPE is a
// status, never a signal.
absl::Status WriteAll(int fd, absl::string_view bytes, absl::Time deadline);

// Blocks SIGPIPE on this thread while alive (a pipe whose reader died must
// give EPIPE, not kill the process), consuming one it caused.
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock();
  ~ScopedSigpipeBlock();
  ScopedSigpipeBlock(const ScopedSigpipeBlock&) = delete;
  ScopedSigpipeBlock& operator=(const ScopedSigpipeBlock&) = delete;

 private:
  sigset_t old_;
  sigset_t pending_before_;
};

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_DEVICE_CONTROL_H_
