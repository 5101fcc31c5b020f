// SyntheticGuest: a whole guest without a VM, attached to a vhost-user-fs
// back-end: GuestRam (several memfd regions with holes), the virtio-fs
// driver over real split rings, a VhostUserDevice attachment, and an
// FsWorkload run by a "vCPU" thread. The guest's own writes to RAM are
// recorded in guest_dirty() as KVM would record them.
//
// Lifecycle on a migration source: Create (attach, FUSE_INIT, files
// opened) → StartVcpu → ... Pause (the vCPU parks between workload steps:
// no request in flight, no guest write) → SaveState → Resume or stay
// paused. On a destination: CreateIncoming (same RAM layout and the same
// placement of rings and guest areas, device connected but not configured)
// → the migration fills RAM → Rebuild(state) → StartVcpu: the workload
// continues at the step the source stopped at, with the source's handles.
//
// Thread-safety: Pause/Resume/StartVcpu/StopVcpu/vcpu_status from any one
// controlling thread; everything touching the driver (RunSteps, VerifyAll,
// SaveState, Rebuild) only while the vCPU is paused or not started.
#ifndef VHOSTMIG_GUEST_SYNTHETIC_GUEST_H_
#define VHOSTMIG_GUEST_SYNTHETIC_GUEST_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "guest/fs_workload.h"
#include "guest/guest_ram.h"
#include "guest/vhost_user_device.h"
#include "guest/vhost_user_transport.h"
#include "guest/virtio_fs_driver.h"
#include "vhost/memory/dirty_log.h"

namespace vhostmig::guest {

struct SyntheticGuestOptions {
  // Three regions with 1 MiB holes; the workload's page cache sits in the
  // second and third.
  GuestRamOptions ram{.region_sizes = {4ull << 20, 1ull << 20, 1ull << 20}};
  uint16_t queue_size = 128;
  VhostUserDeviceOptions device;
  FsWorkloadOptions workload;
  absl::Duration timeout = absl::Seconds(10);  // per request, and Pause
};

class SyntheticGuest {
 public:
  static absl::StatusOr<std::unique_ptr<SyntheticGuest>> Create(
      const std::string& socket_path, const SyntheticGuestOptions& options);
  static absl::StatusOr<std::unique_ptr<SyntheticGuest>> CreateIncoming(
      const std::string& socket_path, const SyntheticGuestOptions& options);
  ~SyntheticGuest();

  GuestRam& ram() { return *ram_; }
  VhostUserTransport& transport() { return *transport_; }
  VhostUserDevice& device() { return *device_; }
  VirtioFsDriver& driver() { return *driver_; }
  FsWorkload& workload() { return *workload_; }
  const std::shared_ptr<vhost::DirtyLog>& guest_dirty() const {
    return guest_dirty_;
  }
  std::vector<vhost::VringLayout> Layouts() const;

  // Runs `n` workload steps on the calling thread (vCPU not started).
  absl::Status RunSteps(uint64_t n);

  // The vCPU thread runs workload steps until paused or stopped; a failing
  // step parks it for good and its status is kept (vcpu_status()).
  absl::Status StartVcpu();
  // Parks the vCPU between steps (bounded by options.timeout plus one
  // request); returns the vCPU's failure if it failed.
  absl::Status Pause();
  absl::Status Resume();
  // Stops and joins the vCPU thread; returns vcpu_status().
  absl::Status StopVcpu();
  absl::Status vcpu_status() const;
  bool paused() const;

  // Driver state, serialized (paused).
  absl::StatusOr<std::string> SaveState();
  // Incoming guest: the driver and workload from migrated RAM + `state`.
  absl::Status Rebuild(absl::string_view state);

  // FNV-1a over every RAM region (compare two guests while both paused).
  uint64_t HashMemory() const;

 private:
  SyntheticGuest() = default;
  static absl::StatusOr<std::unique_ptr<SyntheticGuest>> Build(
      const std::string& socket_path, const SyntheticGuestOptions& options,
      bool configure);
  void VcpuLoop();

  SyntheticGuestOptions options_;
  std::unique_ptr<GuestRam> ram_;
  std::shared_ptr<vhost::DirtyLog> guest_dirty_;
  std::unique_ptr<VhostUserTransport> transport_;
  std::unique_ptr<VhostUserDevice> device_;
  std::unique_ptr<FsWorkload> workload_;
  std::unique_ptr<VirtioFsDriver> driver_;

  mutable absl::Mutex mu_;
  bool pause_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool parked_ ABSL_GUARDED_BY(mu_) = true;
  absl::Status vcpu_status_ ABSL_GUARDED_BY(mu_);
  std::thread vcpu_;
};

}  // namespace vhostmig::guest

#endif  // VHOSTMIG_GUEST_SYNTHETIC_GUEST_H_
