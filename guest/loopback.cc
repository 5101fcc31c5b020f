#include "guest/loopback.h"

// The legacy part of the uapi header does not compile as C++.
#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"

namespace vhostmig::guest {

class Loopback::LoopbackVring : public vhost::Vring {
 public:
  LoopbackVring(int index, const vhost::GuestMemoryMap* memory)
      : index_(index), memory_(memory) {}

  int index() const override { return index_; }
  vhost::DeviceQueue& queue() override { return queue_; }
  const vhost::GuestMemoryMap& memory() const override { return *memory_; }
  void NotifyIfNeeded() override {
    if (queue_.NeedsNotification()) ++interrupts_;
  }

  uint64_t interrupts_ = 0;
  uint64_t process_calls_ = 0;

 private:
  int index_;
  const vhost::GuestMemoryMap* memory_;
  vhost::DeviceQueue queue_;
};

Loopback::Loopback(vhost::Device* device) : device_(device) {}
Loopback::~Loopback() = default;

absl::Status Loopback::Connect(const vhost::GuestMemoryMap& memory,
                               const std::vector<vhost::VringLayout>& layouts) {
  memory_ = memory;
  vrings_.clear();
  for (size_t i = 0; i < layouts.size(); ++i) {
    auto vring = std::make_unique<LoopbackVring>(static_cast<int>(i), &memory_);
    vring->queue().set_next_avail(0);
    vring->queue().set_next_used(0);
    // Like a front-end that sets VHOST_VRING_F_LOG on every ring, so
    // SetLog() below covers used-ring writes too.
    vhost::VringLayout layout = layouts[i];
    layout.log_used_gpa = layout.used_gpa;
    absl::Status status = vring->queue().Setup(memory_, layout);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrFormat("loopback ring %d: %s",
                                                         i, status.message()));
    }
    vrings_.push_back(std::move(vring));
  }
  return absl::OkStatus();
}

void Loopback::SetLog(std::shared_ptr<vhost::DirtyLog> log) {
  for (auto& vring : vrings_) vring->queue().SetLog(log);
}

vhost::DeviceQueue& Loopback::device_queue(uint32_t q) {
  return vrings_[q]->queue();
}

uint64_t Loopback::interrupts(uint32_t q) const {
  return vrings_[q]->interrupts_;
}

uint64_t Loopback::process_calls(uint32_t q) const {
  return vrings_[q]->process_calls_;
}

absl::Status Loopback::Kick(uint32_t queue) {
  if (queue >= vrings_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "kick on queue %d, loopback has %d rings", queue, vrings_.size()));
  }
  LoopbackVring& vring = *vrings_[queue];
  ++vring.process_calls_;
  device_->ProcessQueue(vring);
  return absl::OkStatus();
}

absl::Status Loopback::WaitForUsed(uint32_t queue, absl::Duration timeout) {
  if (queue >= vrings_.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "wait on queue %d, loopback has %d rings", queue, vrings_.size()));
  }
  // The device runs only when we run it: give it one more pass (as if the
  // kick had been suppressed), and if that completes nothing, nothing ever
  // will.
  vhost::DeviceQueue& q = vrings_[queue]->queue();
  const uint16_t before = q.next_used();
  RETURN_IF_ERROR(Kick(queue));
  if (q.next_used() != before) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrFormat(
      "loopback ring %d: the device completed nothing (next_avail %d, "
      "next_used %d, avail idx %d%s)",
      queue, q.next_avail(), q.next_used(), q.avail_idx(),
      q.broken() ? ", queue broken" : ""));
}

absl::StatusOr<std::unique_ptr<LoopbackFs>> LoopbackFs::Create(
    vhost::Device* device, const LoopbackFsOptions& options) {
  const uint32_t device_queues = device->NumQueues();
  if (device_queues < 2) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "virtio-fs device has %d queues; needs hiprio + 1 request queue",
        device_queues));
  }
  std::unique_ptr<LoopbackFs> fs(new LoopbackFs());
  const uint64_t offered = device->Features();
  uint64_t acked = offered & (1ull << VIRTIO_F_VERSION_1);
  if (options.want_event_idx) {
    acked |= offered & (1ull << VIRTIO_RING_F_EVENT_IDX);
  }
  if (options.want_indirect_desc) {
    acked |= offered & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
  }
  device->AckFeatures(acked);
  fs->acked_features_ = acked;

  VirtioFsDriverOptions driver_options = options.driver;
  driver_options.event_idx = acked & (1ull << VIRTIO_RING_F_EVENT_IDX);
  driver_options.indirect_desc = acked & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
  driver_options.use_indirect =
      driver_options.use_indirect && driver_options.indirect_desc;
  driver_options.num_request_queues =
      std::min(driver_options.num_request_queues, device_queues - 1);
  driver_options.queue_size =
      std::min(driver_options.queue_size, device->MaxQueueSize());

  ASSIGN_OR_RETURN(fs->ram_, GuestRam::Create(options.ram));
  fs->loopback_ = std::make_unique<Loopback>(device);
  ASSIGN_OR_RETURN(fs->driver_,
                   VirtioFsDriver::Create(fs->ram_.get(), fs->loopback_.get(),
                                          driver_options));
  std::vector<vhost::VringLayout> layouts;
  for (uint32_t q = 0; q < fs->driver_->num_queues(); ++q) {
    layouts.push_back(fs->driver_->QueueLayout(q));
  }
  RETURN_IF_ERROR(fs->loopback_->Connect(fs->ram_->memory(), layouts));
  return fs;
}

}  // namespace vhostmig::guest
