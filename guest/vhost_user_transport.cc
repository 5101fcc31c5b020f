#include "guest/vhost_user_transport.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/errno_status.h"
#include "base/status_macros.h"

namespace vhostmig::guest {

absl::StatusOr<VhostUserTransport::Queue> VhostUserTransport::MakeQueue() {
  Queue q;
  q.kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!q.kick.valid()) return LastErrnoStatus("eventfd (kick)");
  q.call.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!q.call.valid()) return LastErrnoStatus("eventfd (call)");
  return q;
}

absl::StatusOr<std::unique_ptr<VhostUserTransport>> VhostUserTransport::Create(
    uint32_t num_queues) {
  std::unique_ptr<VhostUserTransport> t(new VhostUserTransport());
  for (uint32_t i = 0; i < num_queues; ++i) {
    ASSIGN_OR_RETURN(Queue q, MakeQueue());
    t->queues_.push_back(std::move(q));
  }
  return t;
}

absl::Status VhostUserTransport::Renew() {
  for (Queue& q : queues_) {
    ASSIGN_OR_RETURN(Queue fresh, MakeQueue());
    q.kick = std::move(fresh.kick);
    q.call = std::move(fresh.call);
  }
  return absl::OkStatus();
}

absl::Status VhostUserTransport::Kick(uint32_t queue) {
  if (queue >= queues_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kick: queue ", queue, " out of range (", queues_.size(), " queues)"));
  }
  const uint64_t one = 1;
  if (::write(queues_[queue].kick.get(), &one, sizeof(one)) != sizeof(one)) {
    return LastErrnoStatus(absl::StrCat("kick eventfd of queue ", queue));
  }
  ++queues_[queue].kicks;
  return absl::OkStatus();
}

absl::Status VhostUserTransport::WaitForUsed(uint32_t queue,
                                             absl::Duration timeout) {
  if (queue >= queues_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "wait: queue ", queue, " out of range (", queues_.size(), " queues)"));
  }
  Queue& q = queues_[queue];
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    // Round up so a sub-millisecond remainder still waits once.
    const int ms = left <= absl::ZeroDuration()
                       ? 0
                       : static_cast<int>(absl::ToInt64Milliseconds(left) + 1);
    pollfd pfd{q.call.get(), POLLIN, 0};
    const int n = ::poll(&pfd, 1, ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoStatus(
          absl::StrCat("poll on call eventfd of queue ", queue));
    }
    if (n == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("queue ", queue, ": no interrupt from the back-end in ",
                       absl::FormatDuration(timeout)));
    }
    uint64_t value = 0;
    // Draining resets the counter; EAGAIN means another reader raced us,
    // which is harmless: the driver polls the used ring anyway.
    if (::read(q.call.get(), &value, sizeof(value)) == sizeof(value)) {
      q.interrupts += value;
    }
    return absl::OkStatus();
  }
}

}  // namespace vhostmig::guest
