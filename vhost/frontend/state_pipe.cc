#include "vhost/frontend/state_pipe.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/errno_status.h"
#include "base/status_macros.h"

namespace vhostmig::vhost {

absl::StatusOr<std::pair<UniqueFd, UniqueFd>> MakePipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return LastErrnoStatus("pipe2");
  return std::make_pair(UniqueFd(p[0]), UniqueFd(p[1]));
}

absl::Status SetNonBlocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return LastErrnoStatus("making the device state channel non-blocking");
  }
  return absl::OkStatus();
}

absl::Status PollUntil(int fd, short events, absl::Time deadline,
                       absl::string_view what) {
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          what, ": the back-end made no progress before the deadline"));
    }
    pollfd pfd{fd, events, 0};
    const int n =
        ::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left) + 1));
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) return LastErrnoStatus(what);
  }
}

absl::StatusOr<size_t> ReadSome(int fd, char* buf, size_t len,
                                absl::Time deadline) {
  for (;;) {
    RETURN_IF_ERROR(
        PollUntil(fd, POLLIN, deadline, "reading the device state"));
    const ssize_t n = ::read(fd, buf, len);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR && errno != EAGAIN) {
      return LastErrnoStatus("reading the device state");
    }
  }
}

absl::Status WriteAll(int fd, absl::string_view bytes, absl::Time deadline) {
  ScopedSigpipeBlock no_sigpipe;
  size_t done = 0;
  while (done < bytes.size()) {
    RETURN_IF_ERROR(
        PollUntil(fd, POLLOUT, deadline, "writing the device state"));
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return LastErrnoStatus(absl::StrCat("writing the device state (", done,
                                          " of ", bytes.size(), " bytes)"));
    }
    done += n;
  }
  return absl::OkStatus();
}

ScopedSigpipeBlock::ScopedSigpipeBlock() {
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigpending(&pending_before_);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_);
}

ScopedSigpipeBlock::~ScopedSigpipeBlock() {
  if (!sigismember(&pending_before_, SIGPIPE)) {
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE)) {
      sigset_t pipe_set;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      const timespec zero{0, 0};
      sigtimedwait(&pipe_set, nullptr, &zero);
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_, nullptr);
}

}  // namespace vhostmig::vhost
