// The front-end's end of a SET_DEVICE_STATE_FD channel (vhost-user.rst,
// "Migrating back-end state"): the pipe the front-end creates and hands one
// end of to the back-end, and bounded reads and writes on whichever end the
// front-end keeps (its own, or the one the back-end answered with).
//
// Every wait is bounded by an absolute deadline, so a back-end that stops
// reading or writing yields DeadlineExceeded instead of a hung migration;
// writing to a channel whose reader died yields an EPIPE status, never a
// SIGPIPE that would kill the process.
//
// Thread-safety: free functions on fds the caller owns; ScopedSigpipeBlock
// affects only the calling thread.
#ifndef VHOSTMIG_VHOST_FRONTEND_STATE_PIPE_H_
#define VHOSTMIG_VHOST_FRONTEND_STATE_PIPE_H_

#include <signal.h>

#include <cstddef>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"

namespace vhostmig::vhost {

// A close-on-exec pipe: {read end, write end}.
absl::StatusOr<std::pair<UniqueFd, UniqueFd>> MakePipe();

// Sets O_NONBLOCK on the device state channel `fd` (WriteAll needs it so a
// full pipe waits in poll, where the deadline applies, not in write).
absl::Status SetNonBlocking(int fd);

// Waits until `fd` is ready for `events` or `deadline` passes
// (DeadlineExceeded naming `what`).
absl::Status PollUntil(int fd, short events, absl::Time deadline,
                       absl::string_view what);

// Reads what is available from `fd` into `buf` (at most `len` bytes),
// waiting for data until `deadline`. Returns the byte count, 0 at EOF (the
// back-end closed its end: the state is complete).
absl::StatusOr<size_t> ReadSome(int fd, char* buf, size_t len,
                                absl::Time deadline);

// Writes all of `bytes` to the non-blocking `fd` by `deadline`; EPIPE is a
// status, never a signal.
absl::Status WriteAll(int fd, absl::string_view bytes, absl::Time deadline);

// Blocks SIGPIPE on this thread while alive (a pipe whose reader died must
// give EPIPE, not kill the process), consuming one it caused, without
// touching the process-wide disposition a library must not own.
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

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_FRONTEND_STATE_PIPE_H_
