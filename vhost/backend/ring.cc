#include "vhost/backend/ring.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vhost/protocol/features.h"

namespace vhostmig::vhost {
namespace {

// Sizes of the ring parts (virtio 1.2, 2.7), including the event fields.
uint64_t DescBytes(uint16_t n) { return 16ull * n; }
uint64_t AvailBytes(uint16_t n) { return 4 + 2ull * n + 2; }
uint64_t UsedBytes(uint16_t n) { return 4 + 8ull * n + 2; }

void DrainEventFd(int fd) {
  uint64_t value;
  while (::read(fd, &value, sizeof(value)) < 0 && errno == EINTR) {
  }
}

}  // namespace

BackendRing::BackendRing(int index, Device* device)
    : index_(index),
      device_(device),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

BackendRing::~BackendRing() { Stop(); }

void BackendRing::NotifyIfNeeded() {
  if (!queue_.NeedsNotification()) return;
  absl::MutexLock lock(&call_mu_);
  if (!call_.valid()) return;
  const uint64_t one = 1;
  while (::write(call_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

void BackendRing::SetCallFd(UniqueFd fd) {
  absl::MutexLock lock(&call_mu_);
  call_ = std::move(fd);
}

void BackendRing::SetEnabled(bool enabled) {
  const bool was = enabled_.exchange(enabled, std::memory_order_acq_rel);
  if (enabled && !was && started_) Wake();
}

void BackendRing::Wake() {
  const uint64_t one = 1;
  while (::write(wake_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

absl::Status BackendRing::SetUpQueue(const GuestMemoryMap& memory,
                                     uint64_t features) {
  if (size_ == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("ring ", index_, ": SET_VRING_NUM was not sent"));
  }
  if (!addr_.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("ring ", index_, ": SET_VRING_ADDR was not sent"));
  }
  VringLayout layout;
  layout.size = size_;
  layout.event_idx = (features & FeatureMask(kFeatureEventIdx)) != 0;
  layout.indirect_desc = (features & FeatureMask(kFeatureIndirectDesc)) != 0;
  ASSIGN_OR_RETURN(
      layout.desc_gpa,
      memory.FrontendToGuest(addr_->desc_user_addr, DescBytes(size_)));
  ASSIGN_OR_RETURN(
      layout.avail_gpa,
      memory.FrontendToGuest(addr_->avail_user_addr, AvailBytes(size_)));
  ASSIGN_OR_RETURN(
      layout.used_gpa,
      memory.FrontendToGuest(addr_->used_user_addr, UsedBytes(size_)));
  if ((addr_->flags & kVringAddrFlagLog) != 0) {
    layout.log_used_gpa = addr_->log_guest_addr;
  }
  RETURN_IF_ERROR(queue_.Setup(memory, layout));
  memory_ = memory;
  return absl::OkStatus();
}

absl::Status BackendRing::SetAddr(const VhostUserVringAddr& addr,
                                  const GuestMemoryMap& memory,
                                  uint64_t features) {
  addr_ = addr;
  if (!started_) return absl::OkStatus();
  // A started ring gets new addresses (typically the LOG flag when
  // migration starts): re-set it up between two passes.
  JoinWorker();
  absl::Status status = SetUpQueue(memory, features);
  LaunchWorker();
  return status;
}

void BackendRing::SetKickFd(UniqueFd fd) {
  if (!started_) {
    kick_ = std::move(fd);
    return;
  }
  JoinWorker();
  kick_ = std::move(fd);
  LaunchWorker();
}

absl::Status BackendRing::Start(const GuestMemoryMap& memory, uint64_t features,
                                std::shared_ptr<DirtyLog> log) {
  if (started_) return absl::OkStatus();
  if (!kick_.valid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("ring ", index_, ": no kick fd"));
  }
  RETURN_IF_ERROR(SetUpQueue(memory, features));
  // The used index lives in guest memory (SET_VRING_BASE only carries the
  // avail index): continue from there, as the destination of a migration
  // must.
  uint16_t used_idx = 0;
  RETURN_IF_ERROR(
      memory.Read(queue_.layout().used_gpa + 2, &used_idx, sizeof(used_idx)));
  queue_.set_next_used(used_idx);
  queue_.SetLog(std::move(log));
  // Without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled as it starts.
  if (!(features & kProtocolFeaturesMask)) {
    enabled_.store(true, std::memory_order_release);
  }
  started_ = true;
  LaunchWorker();
  return absl::OkStatus();
}

void BackendRing::Stop() {
  if (!started_) return;
  JoinWorker();
  started_ = false;
  kick_.reset();
}

absl::Status BackendRing::UpdateMemory(const GuestMemoryMap& memory,
                                       uint64_t features) {
  if (!started_) {
    memory_ = memory;
    return absl::OkStatus();
  }
  JoinWorker();
  absl::Status status = SetUpQueue(memory, features);
  LaunchWorker();
  return status;
}

void BackendRing::Reset() {
  Stop();
  size_ = 0;
  addr_.reset();
  err_.reset();
  SetCallFd(UniqueFd());
  enabled_.store(false, std::memory_order_release);
  queue_ = DeviceQueue();
  memory_ = GuestMemoryMap();
}

void BackendRing::LaunchWorker() {
  stop_requested_.store(false, std::memory_order_release);
  worker_ = std::thread([this] { WorkerLoop(); });
}

void BackendRing::JoinWorker() {
  if (!worker_.joinable()) return;
  stop_requested_.store(true, std::memory_order_release);
  Wake();
  worker_.join();
  DrainEventFd(wake_.get());
}

void BackendRing::ProcessPass() {
  // A broken or not-ready queue pops nothing; the device still gets called
  // so that it sees the ring, which is harmless.
  if (!enabled_.load(std::memory_order_acquire)) return;
  device_->ProcessQueue(*this);
}

void BackendRing::WorkerLoop() {
  // Process once without waiting for a kick: work made available before the
  // ring (re)started must not wait for a kick that never comes.
  ProcessPass();
  pollfd fds[2] = {{kick_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  nfds_t nfds = 2;
  for (;;) {
    if (stop_requested_.load(std::memory_order_acquire)) return;
    const int n = ::poll(fds, nfds, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "vhost-user ring %d: poll: %s\n", index_,
                   std::strerror(errno));
      return;
    }
    if (fds[1].revents & POLLIN) DrainEventFd(wake_.get());
    if (stop_requested_.load(std::memory_order_acquire)) return;
    if (fds[0].revents & POLLIN) {
      DrainEventFd(kick_.get());
    } else if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
      // A kick fd that can no longer be read: keep serving wake-ups only.
      std::fprintf(stderr, "vhost-user ring %d: kick fd failed\n", index_);
      fds[0].fd = -1;
    }
    ProcessPass();
  }
}

}  // namespace vhostmig::vhost
