#include "migration/device_control.h"

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
#include "vhost/protocol/features.h"

namespace vhostmig::migration {

absl::Status SetRingAddr(vhost::Frontend& frontend,
                         vhost::VhostUserVringAddr addr, bool log) {
  if (log) {
    addr.flags |= vhost::kVringAddrFlagLog;
  } else {
    addr.flags &= ~vhost::kVringAddrFlagLog;
  }
  return frontend.SetVringAddr(addr);
}

absl::Status StartRing(vhost::Frontend& frontend, uint16_t size,
                       const vhost::VhostUserVringAddr& addr, uint16_t base,
                       int kick_fd, int call_fd, bool log) {
  const uint32_t q = addr.index;
  RETURN_IF_ERROR(frontend.SetVringNum(q, size));
  RETURN_IF_ERROR(frontend.SetVringBase(q, base));
  RETURN_IF_ERROR(SetRingAddr(frontend, addr, log));
  RETURN_IF_ERROR(frontend.SetVringCall(q, call_fd));
  RETURN_IF_ERROR(frontend.SetVringKick(q, kick_fd));
  // With PROTOCOL_FEATURES a started ring is still disabled ("Ring states").
  if (frontend.acked_features() & vhost::kProtocolFeaturesMask) {
    RETURN_IF_ERROR(frontend.SetVringEnable(q, true));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<UniqueFd, UniqueFd>> MakePipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return LastErrnoStatus("pipe2");
  return std::make_pair(UniqueFd(p[0]), UniqueFd(p[1]));
}

absl::Status PollUntil(int fd, short events, absl::Time deadline,
                       absl::string_view what) {
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, ": no progress before the deadline"));
    }
    pollfd pfd{fd, events, 0};
    const int n =
        ::poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left) + 1));
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) return LastErrnoStatus(what);
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
      return LastErrnoStatus("writing the device state");
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

}  // namespace vhostmig::migration
