// VhostUserTransport: the synthetic guest's notification path to a real
// vhost-user back-end, i.e. what a VMM's ioeventfd and irqfd are for a VM.
//
// Each queue has a kick eventfd (the driver writes it, the back-end polls it:
// vhost-user.rst, VHOST_USER_SET_VRING_KICK) and a call eventfd (the
// back-end writes it when it wants to interrupt the driver:
// VHOST_USER_SET_VRING_CALL). The fds are handed to the back-end by
// VhostUserDevice (guest/vhost_user_device.h); this class only owns them and
// implements guest::Transport on top of them:
//
//   Kick(q)               writes 1 to q's kick eventfd.
//   WaitForUsed(q, t)     polls q's call eventfd for at most t, then drains
//                         it; DeadlineExceeded when no interrupt came.
//
// The driver polls the used ring before and after waiting, so an interrupt
// that arrived before WaitForUsed (the eventfd counter is already non-zero)
// is not lost, and a spurious wake-up costs only a ring poll.
//
// Renew() replaces every eventfd with a fresh one, for attaching the same
// guest to another back-end (a migration destination): the old back-end may
// still hold the old fds and must not be able to inject interrupts or see
// kicks meant for its successor.
//
// Thread-safety: one thread at a time (like the driver that uses it).
#ifndef VHOSTMIG_GUEST_VHOST_USER_TRANSPORT_H_
#define VHOSTMIG_GUEST_VHOST_USER_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
#include "guest/virtio_fs_driver.h"

namespace vhostmig::guest {

class VhostUserTransport : public Transport {
 public:
  // One kick and one call eventfd per queue (non-blocking, close-on-exec).
  static absl::StatusOr<std::unique_ptr<VhostUserTransport>> Create(
      uint32_t num_queues);

  uint32_t num_queues() const { return queues_.size(); }
  // The fds to pass in SET_VRING_KICK / SET_VRING_CALL (borrowed: the
  // transport keeps them open until Renew or destruction).
  int kick_fd(uint32_t queue) const { return queues_[queue].kick.get(); }
  int call_fd(uint32_t queue) const { return queues_[queue].call.get(); }

  // Fresh eventfds for every queue (see the class comment).
  absl::Status Renew();

  // Transport. An out-of-range queue is InvalidArgument.
  absl::Status Kick(uint32_t queue) override;
  absl::Status WaitForUsed(uint32_t queue, absl::Duration timeout) override;

  // Kicks sent and interrupts received on `queue`, for tests and reports.
  uint64_t kicks(uint32_t queue) const { return queues_[queue].kicks; }
  uint64_t interrupts(uint32_t queue) const {
    return queues_[queue].interrupts;
  }

 private:
  struct Queue {
    UniqueFd kick;
    UniqueFd call;
    uint64_t kicks = 0;
    uint64_t interrupts = 0;
  };

  VhostUserTransport() = default;
  static absl::StatusOr<Queue> MakeQueue();

  std::vector<Queue> queues_;
};

}  // namespace vhostmig::guest

#endif  // VHOSTMIG_GUEST_VHOST_USER_TRANSPORT_H_
