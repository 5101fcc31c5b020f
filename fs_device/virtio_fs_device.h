// VirtioFsDevice: the virtio-fs device (virtio 1.2, 5.11; device id 26) as
// a vhost::Device. Queue 0 is the high-priority queue (FORGET,
// BATCH_FORGET), queues 1..N carry requests; every queue runs the same
// FUSE dispatcher over one PassthroughFs. The config space is
// struct virtio_fs_config (tag + num_request_queues).
//
// A queue pass pops every available chain, handles them as one batch (the
// READ/WRITE data of the batch goes through one io_uring submission on
// that ring's own DataPath), publishes all used elements with one index
// update and notifies once.
//
// Device state (DEVICE_STATE, protocol feature 19) is offered: the inode
// and handle tables, the id counters and the FUSE session migrate to a
// daemon serving the same directory (docs/state-format.md).
// OnLogAllChanged(true) starts gathering locations in the background
// (location_gatherer.h), OnLogAllChanged(false) discards them; SaveState
// writes the prepared records (state_writer.h) and LoadState installs a
// stream (state_loader.h), also before SET_FEATURES and SET_MEM_TABLE: it
// touches no guest memory.
//
// Thread-safety: as the Device contract; ProcessQueue of different rings
// runs concurrently.
#ifndef VHOSTMIG_FS_DEVICE_VIRTIO_FS_DEVICE_H_
#define VHOSTMIG_FS_DEVICE_VIRTIO_FS_DEVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fs_device/data_path.h"
#include "fs_device/fs_config.h"
#include "fs_device/fuse_dispatcher.h"
#include "fs_device/location_gatherer.h"
#include "fs_device/passthrough_fs.h"
#include "fs_device/state_writer.h"
#include "vhost/backend/device.h"

namespace vhostmig::fs {

struct VirtioFsOptions {
  std::string tag = "vhostmig";  // at most 36 bytes
  uint32_t num_request_queues = 1;
  uint16_t queue_size = 1024;
};

class VirtioFsDevice : public vhost::Device {
 public:
  static constexpr size_t kMaxTagLength = 36;  // virtio_fs_config::tag

  // Validates the options (tag length, at least one request queue) and
  // opens the shared directory.
  static absl::StatusOr<std::unique_ptr<VirtioFsDevice>> Create(
      const FsConfig& config, const VirtioFsOptions& options);

  uint64_t Features() const override;
  uint64_t ProtocolFeatures() const override;
  uint32_t NumQueues() const override;
  uint16_t MaxQueueSize() const override;
  absl::StatusOr<std::vector<uint8_t>> ReadConfig(uint32_t offset,
                                                  uint32_t size) override;
  absl::Status WriteConfig(uint32_t offset,
                           absl::Span<const uint8_t> data) override;
  void ProcessQueue(vhost::Vring& vring) override;
  void OnLogAllChanged(bool enabled) override;
  absl::Status SaveState(int fd) override;
  absl::Status LoadState(int fd) override;
  void Reset() override;

  PassthroughFs& fs() { return *fs_; }
  LocationGatherer& gatherer() { return *gatherer_; }
  // What the last SaveState did (tests, benchmarks).
  StateWriteStats last_save_stats() const;

 private:
  VirtioFsDevice(std::unique_ptr<PassthroughFs> fs,
                 const VirtioFsOptions& options);
  DataPath& DataPathFor(int ring);

  std::unique_ptr<PassthroughFs> fs_;
  FuseDispatcher dispatcher_;
  const VirtioFsOptions options_;
  // One per ring, created on first use by that ring's worker (each ring's
  // ProcessQueue calls are serialized, so a slot has one user at a time).
  std::vector<std::unique_ptr<DataPath>> data_paths_;
  // Declared after fs_: its background thread uses fs_ and is joined first.
  std::unique_ptr<LocationGatherer> gatherer_;
  mutable absl::Mutex stats_mu_;
  StateWriteStats last_save_stats_ ABSL_GUARDED_BY(stats_mu_);
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_VIRTIO_FS_DEVICE_H_
