#include "fs_device/virtio_fs_device.h"

#include <endian.h>
#include <fcntl.h>
#include <linux/virtio_fs.h>

#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "fs_device/state_loader.h"
#include "vhost/protocol/features.h"
#include "vhost/virtqueue/device_queue.h"

namespace vhostmig::fs {

absl::StatusOr<std::unique_ptr<VirtioFsDevice>> VirtioFsDevice::Create(
    const FsConfig& config, const VirtioFsOptions& options) {
  if (options.tag.empty() || options.tag.size() > kMaxTagLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("virtio-fs tag must be 1..", kMaxTagLength, " bytes, got ",
                     options.tag.size()));
  }
  if (options.num_request_queues == 0 || options.num_request_queues > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request queues must be 1..1024, got ", options.num_request_queues));
  }
  auto fs = PassthroughFs::Create(config);
  if (!fs.ok()) return fs.status();
  return std::unique_ptr<VirtioFsDevice>(
      new VirtioFsDevice(*std::move(fs), options));
}

VirtioFsDevice::VirtioFsDevice(std::unique_ptr<PassthroughFs> fs,
                               const VirtioFsOptions& options)
    : fs_(std::move(fs)),
      dispatcher_(fs_.get()),
      options_(options),
      data_paths_(1 + options.num_request_queues),
      gatherer_(std::make_unique<LocationGatherer>(
          fs_.get(), fs_->config().migration_mode)) {}

uint64_t VirtioFsDevice::Features() const {
  return vhost::FeatureMask(vhost::kFeatureVersion1) |
         vhost::FeatureMask(vhost::kFeatureIndirectDesc) |
         vhost::FeatureMask(vhost::kFeatureEventIdx);
}

uint64_t VirtioFsDevice::ProtocolFeatures() const {
  return vhost::FeatureMask(vhost::ProtocolFeature::kConfig) |
         vhost::FeatureMask(vhost::ProtocolFeature::kDeviceState);
}

uint32_t VirtioFsDevice::NumQueues() const {
  return 1 + options_.num_request_queues;
}

uint16_t VirtioFsDevice::MaxQueueSize() const { return options_.queue_size; }

absl::StatusOr<std::vector<uint8_t>> VirtioFsDevice::ReadConfig(uint32_t offset,
                                                                uint32_t size) {
  virtio_fs_config config{};
  std::memcpy(config.tag, options_.tag.data(), options_.tag.size());
  config.num_request_queues = htole32(options_.num_request_queues);
  if (offset > sizeof(config) || size > sizeof(config) - offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GET_CONFIG: range [", offset, ", +", size,
        ") outside virtio_fs_config (", sizeof(config), " bytes)"));
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(&config);
  return std::vector<uint8_t>(bytes + offset, bytes + offset + size);
}

absl::Status VirtioFsDevice::WriteConfig(uint32_t offset,
                                         absl::Span<const uint8_t> data) {
  // virtio 1.2, 5.11.4: the virtio-fs config space is read-only.
  return absl::PermissionDeniedError(
      absl::StrCat("SET_CONFIG: virtio-fs config space is read-only (offset ",
                   offset, ", size ", data.size(), ")"));
}

DataPath& VirtioFsDevice::DataPathFor(int ring) {
  auto& slot = data_paths_[ring];
  if (!slot) slot = MakeDataPath(fs_->config().use_io_uring);
  return *slot;
}

void VirtioFsDevice::ProcessQueue(vhost::Vring& vring) {
  const int ring = vring.index();
  if (ring < 0 || static_cast<size_t>(ring) >= data_paths_.size()) return;
  vhost::DeviceQueue& queue = vring.queue();
  DataPath& data_path = DataPathFor(ring);

  std::vector<vhost::DescriptorChain> chains;
  std::vector<FuseChain> fuse_chains;
  std::optional<vhost::DescriptorChain> next;
  for (;;) {
    // Kicks are pointless while the batch is being drained.
    queue.SetNotification(false);
    chains.clear();
    if (next) chains.push_back(*std::move(next));
    next.reset();
    // At most kMaxBatch chains per batch, then publish and notify: a driver
    // with many requests in flight gets its first completions while the
    // rest are still being served, so it resubmits on its CPU while we
    // serve on ours. Draining the whole ring first (32 requests) made the
    // two sides take turns: on an idle 2-CPU machine 4 KiB reads at depth
    // 32 ran at 1.6 GB/s against 3.2 GB/s with 16 (docs/performance.md).
    constexpr size_t kMaxBatch = 16;
    while (chains.size() < kMaxBatch) {
      auto chain = queue.Pop();
      if (!chain) break;
      chains.push_back(*std::move(chain));
    }
    if (chains.empty()) {
      queue.SetNotification(true);
      // Close the race with a driver that added work before notifications
      // were back on.
      next = queue.Pop();
      if (!next) return;
      continue;
    }

    // A malformed chain (bad descriptor) is completed with 0 bytes; the
    // others go to the dispatcher as one batch.
    fuse_chains.clear();
    std::vector<size_t> served;
    for (size_t i = 0; i < chains.size(); ++i) {
      if (!chains[i].status.ok()) continue;
      FuseChain& c = fuse_chains.emplace_back();
      for (const auto& b : chains[i].readable) {
        c.in.push_back(iovec{b.host, b.len});
      }
      for (const auto& b : chains[i].writable) {
        c.out.push_back(iovec{b.host, b.len});
      }
      served.push_back(i);
    }
    std::vector<uint32_t> written(chains.size(), 0);
    const std::vector<uint32_t> replies =
        dispatcher_.ProcessBatch(fuse_chains, data_path);
    for (size_t k = 0; k < served.size(); ++k) written[served[k]] = replies[k];
    std::vector<std::pair<const vhost::DescriptorChain*, uint32_t>> done;
    done.reserve(chains.size());
    for (size_t i = 0; i < chains.size(); ++i) {
      done.emplace_back(&chains[i], written[i]);
    }
    queue.PushUsedBatch(done);
    vring.NotifyIfNeeded();
  }
}

void VirtioFsDevice::OnLogAllChanged(bool enabled) {
  // On: a migration starts. Off: it was cancelled or is over; either way
  // what was gathered is stale from now on.
  if (enabled) {
    gatherer_->Start();
  } else {
    gatherer_->Cancel();
  }
}

namespace {

// A pipe channel holds 64 KiB by default: a stream of some MiB would then
// cost a context switch per 64 KiB on each side. 1 MiB is the unprivileged
// maximum (/proc/sys/fs/pipe-max-size); anything else than a pipe (a
// memfd, a socket) ignores this.
void WidenChannel(int fd) { fcntl(fd, F_SETPIPE_SZ, 1 << 20); }

}  // namespace

absl::Status VirtioFsDevice::SaveState(int fd) {
  WidenChannel(fd);
  StateWriter writer(fs_.get(), fs_->config().migration_mode, gatherer_.get());
  absl::Status status = writer.Write(fd);
  absl::MutexLock lock(&stats_mu_);
  last_save_stats_ = writer.stats();
  return status;
}

absl::Status VirtioFsDevice::LoadState(int fd) {
  WidenChannel(fd);
  StateLoader loader(fs_.get());
  return loader.Load(fd);
}

StateWriteStats VirtioFsDevice::last_save_stats() const {
  absl::MutexLock lock(&stats_mu_);
  return last_save_stats_;
}

void VirtioFsDevice::Reset() { fs_->Reset(); }

}  // namespace vhostmig::fs
