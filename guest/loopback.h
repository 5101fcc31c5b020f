// Loopback: runs a vhost Device against the synthetic guest's driver in one
// process, with no socket and no vhost-user messages, through real split
// rings in shared guest memory.
//
// Loopback is a Transport. It holds one DeviceQueue per driver queue, set
// up on the same GuestMemoryMap and ring layout the driver uses; Kick(q)
// runs device.ProcessQueue() on ring q synchronously, on the caller's thread
// (the Device contract says every popped chain is completed before
// ProcessQueue returns). WaitForUsed(q) runs the ring once more and reports
// DeadlineExceeded when the device completed nothing, so a device that
// drops a request fails the test at once instead of hanging it.
//
// LoopbackFs bundles guest RAM, the loopback and a VirtioFsDriver with
// features negotiated against the device, which is what most fs-device
// tests want:
//
//   MyDevice device(...);
//   ASSIGN_OR_RETURN(auto fs, guest::LoopbackFs::Create(&device));
//   ASSIGN_OR_RETURN(fuse_init_out init, fs->driver().Init());
//   ASSIGN_OR_RETURN(fuse_entry_out e, fs->driver().Lookup(FUSE_ROOT_ID, "a"));
//
// Thread-safety: one thread at a time.
#ifndef VHOSTMIG_GUEST_LOOPBACK_H_
#define VHOSTMIG_GUEST_LOOPBACK_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "guest/guest_ram.h"
#include "guest/virtio_fs_driver.h"
#include "vhost/backend/device.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/virtqueue/device_queue.h"

namespace vhostmig::guest {

class Loopback : public Transport {
 public:
  explicit Loopback(vhost::Device* device);
  ~Loopback() override;

  // Sets up one started, enabled DeviceQueue per layout (queue i = ring i),
  // with next avail/used indices 0.
  absl::Status Connect(const vhost::GuestMemoryMap& memory,
                       const std::vector<vhost::VringLayout>& layouts);

  // Attaches (nullptr: detaches) a dirty log to every device queue, as
  // SET_LOG_BASE + LOG_ALL would.
  void SetLog(std::shared_ptr<vhost::DirtyLog> log);

  // Transport.
  absl::Status Kick(uint32_t queue) override;
  absl::Status WaitForUsed(uint32_t queue, absl::Duration timeout) override;

  vhost::DeviceQueue& device_queue(uint32_t q);
  // Interrupts the device raised on ring q (NotifyIfNeeded said yes), and
  // how often ProcessQueue ran on it.
  uint64_t interrupts(uint32_t q) const;
  uint64_t process_calls(uint32_t q) const;

 private:
  class LoopbackVring;

  vhost::Device* device_;
  vhost::GuestMemoryMap memory_;
  std::vector<std::unique_ptr<LoopbackVring>> vrings_;
};

struct LoopbackFsOptions {
  GuestRamOptions ram;
  // Driver options; event_idx / indirect_desc are overridden by what the
  // device offers in Features() (they stay on only if both sides have them).
  VirtioFsDriverOptions driver;
  // Whether to offer EVENT_IDX / INDIRECT_DESC from the driver side.
  bool want_event_idx = true;
  bool want_indirect_desc = true;
};

class LoopbackFs {
 public:
  // Negotiates features (device->AckFeatures with VERSION_1 plus the ring
  // features both sides have), creates guest RAM, the driver (with
  // min(device->NumQueues() - 1, requested) request queues) and the
  // loopback. Does not send FUSE_INIT.
  static absl::StatusOr<std::unique_ptr<LoopbackFs>> Create(
      vhost::Device* device, const LoopbackFsOptions& options = {});

  GuestRam& ram() { return *ram_; }
  Loopback& loopback() { return *loopback_; }
  VirtioFsDriver& driver() { return *driver_; }
  uint64_t acked_features() const { return acked_features_; }

 private:
  LoopbackFs() = default;

  std::unique_ptr<GuestRam> ram_;
  std::unique_ptr<Loopback> loopback_;
  std::unique_ptr<VirtioFsDriver> driver_;
  uint64_t acked_features_ = 0;
};

}  // namespace vhostmig::guest

#endif  // VHOSTMIG_GUEST_LOOPBACK_H_
