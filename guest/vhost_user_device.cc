#include "guest/vhost_user_device.h"

#include <sys/socket.h>
#include <sys/time.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "vhost/frontend/state_pipe.h"
#include "vhost/protocol/payloads.h"

namespace vhostmig::guest {
namespace {

using vhost::FeatureMask;

absl::Status SetReplyTimeout(int socket, absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  if (::setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
    return LastErrnoStatus("setsockopt(SO_RCVTIMEO) on the vhost-user socket");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<VhostUserDevice>> VhostUserDevice::Connect(
    const std::string& socket_path, GuestRam* ram,
    VhostUserTransport* transport, const VhostUserDeviceOptions& options) {
  std::unique_ptr<VhostUserDevice> d(
      new VhostUserDevice(ram, transport, options));
  ASSIGN_OR_RETURN(d->frontend_, vhost::Frontend::Connect(socket_path));
  RETURN_IF_ERROR(
      SetReplyTimeout(d->frontend_->socket(), options.reply_timeout));
  vhost::Frontend& f = *d->frontend_;
  const uint64_t offered = f.backend_features();
  if (!(offered & FeatureMask(vhost::kFeatureVersion1))) {
    return absl::FailedPreconditionError(
        absl::StrCat(socket_path, ": back-end features 0x", absl::Hex(offered),
                     " lack VIRTIO_F_VERSION_1"));
  }
  d->features_ = FeatureMask(vhost::kFeatureVersion1);
  if (options.want_event_idx) {
    d->features_ |= offered & FeatureMask(vhost::kFeatureEventIdx);
  }
  if (options.want_indirect_desc) {
    d->features_ |= offered & FeatureMask(vhost::kFeatureIndirectDesc);
  }
  RETURN_IF_ERROR(f.SetOwner());
  if (offered & vhost::kProtocolFeaturesMask) {
    d->features_ |= vhost::kProtocolFeaturesMask;
    RETURN_IF_ERROR(f.SetProtocolFeatures(options.protocol_features &
                                          f.backend_protocol_features()));
  }
  return d;
}

bool VhostUserDevice::event_idx() const {
  return features_ & FeatureMask(vhost::kFeatureEventIdx);
}

bool VhostUserDevice::indirect_desc() const {
  return features_ & FeatureMask(vhost::kFeatureIndirectDesc);
}

absl::Status VhostUserDevice::Configure() {
  RETURN_IF_ERROR(frontend_->SetFeatures(
      features_ | (log_all_ ? vhost::kLogAllMask : uint64_t{0})));
  std::vector<vhost::VhostUserMemoryRegion> regions;
  std::vector<int> fds;
  for (const auto& region : ram_->memory().regions()) {
    const vhost::MemoryRegionLayout& l = region->layout();
    vhost::VhostUserMemoryRegion r;
    r.guest_phys_addr = l.guest_phys_addr;
    r.memory_size = l.memory_size;
    r.userspace_addr = l.userspace_addr;
    r.mmap_offset = l.mmap_offset;
    regions.push_back(r);
    fds.push_back(region->fd());
  }
  if (regions.size() > vhost::kMaxMemoryRegions) {
    return absl::InvalidArgumentError(
        absl::StrCat("SET_MEM_TABLE carries at most ", vhost::kMaxMemoryRegions,
                     " regions; the guest has ", regions.size()));
  }
  return frontend_->SetMemTable(regions, fds);
}

absl::StatusOr<uint64_t> VhostUserDevice::FrontendAddress(uint64_t gpa,
                                                          uint64_t len) const {
  for (const auto& region : ram_->memory().regions()) {
    const vhost::MemoryRegionLayout& l = region->layout();
    if (gpa >= l.guest_phys_addr && len <= l.memory_size &&
        gpa - l.guest_phys_addr <= l.memory_size - len) {
      return gpa - l.guest_phys_addr + l.userspace_addr;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "guest range [0x", absl::Hex(gpa), ", +", len, ") is not in one region"));
}

absl::Status VhostUserDevice::SetVringAddr(uint32_t queue,
                                           const vhost::VringLayout& layout,
                                           bool log) {
  const uint64_t desc_len = 16ull * layout.size;
  const uint64_t avail_len = 6 + 2ull * layout.size;
  const uint64_t used_len = 6 + 8ull * layout.size;
  vhost::VhostUserVringAddr addr{};
  addr.index = queue;
  // The used ring's GPA is what the back-end logs against (vhost-user.rst,
  // "Migration": log_guest_addr); it is meaningful only with the LOG flag,
  // but QEMU always fills it in.
  addr.flags = log ? vhost::kVringAddrFlagLog : 0;
  ASSIGN_OR_RETURN(addr.desc_user_addr,
                   FrontendAddress(layout.desc_gpa, desc_len));
  ASSIGN_OR_RETURN(addr.avail_user_addr,
                   FrontendAddress(layout.avail_gpa, avail_len));
  ASSIGN_OR_RETURN(addr.used_user_addr,
                   FrontendAddress(layout.used_gpa, used_len));
  addr.log_guest_addr = layout.used_gpa;
  return frontend_->SetVringAddr(addr);
}

absl::Status VhostUserDevice::StartRing(uint32_t queue,
                                        const vhost::VringLayout& layout,
                                        uint16_t base) {
  if (queue >= transport_->num_queues()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring ", queue, " has no notifiers (the transport has ",
                     transport_->num_queues(), " queues)"));
  }
  RETURN_IF_ERROR(frontend_->SetVringNum(queue, layout.size));
  RETURN_IF_ERROR(frontend_->SetVringBase(queue, base));
  RETURN_IF_ERROR(SetVringAddr(queue, layout, logging()));
  RETURN_IF_ERROR(frontend_->SetVringCall(queue, transport_->call_fd(queue)));
  // The kick fd starts the ring ("Starting and stopping rings").
  RETURN_IF_ERROR(frontend_->SetVringKick(queue, transport_->kick_fd(queue)));
  // With PROTOCOL_FEATURES a ring starts disabled ("Ring states").
  if (features_ & vhost::kProtocolFeaturesMask) {
    RETURN_IF_ERROR(frontend_->SetVringEnable(queue, true));
  }
  started_[queue] = layout;
  return absl::OkStatus();
}

absl::Status VhostUserDevice::StartRings(
    const std::vector<vhost::VringLayout>& layouts,
    const std::vector<uint16_t>& bases) {
  for (uint32_t q = 0; q < layouts.size(); ++q) {
    RETURN_IF_ERROR(StartRing(q, layouts[q], q < bases.size() ? bases[q] : 0));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<uint32_t, uint16_t>> VhostUserDevice::StopRings() {
  // QEMU's order (vhost_dev_stop): disable, then stop each ring; the
  // GET_VRING_BASE reply comes after the back-end finished in-flight work.
  if (features_ & vhost::kProtocolFeaturesMask) {
    for (const auto& [q, layout] : started_) {
      RETURN_IF_ERROR(frontend_->SetVringEnable(q, false));
    }
  }
  std::map<uint32_t, uint16_t> bases;
  for (const auto& [q, layout] : started_) {
    ASSIGN_OR_RETURN(const uint32_t base, frontend_->GetVringBase(q));
    if (base > 0xffff) {
      return absl::DataLossError(
          absl::StrCat("GET_VRING_BASE(", q, "): ", base,
                       " does not fit a split ring index"));
    }
    bases[q] = static_cast<uint16_t>(base);
  }
  started_.clear();
  return bases;
}

absl::Status VhostUserDevice::StartLogging(
    std::shared_ptr<vhost::DirtyLog> log) {
  if (!frontend_->BackendHas(vhost::ProtocolFeature::kLogShmfd) ||
      !(frontend_->acked_protocol_features() &
        FeatureMask(vhost::ProtocolFeature::kLogShmfd))) {
    return absl::FailedPreconditionError(
        "dirty logging needs LOG_SHMFD offered and acked");
  }
  if (!(frontend_->backend_features() & vhost::kLogAllMask)) {
    return absl::FailedPreconditionError(
        "the back-end does not offer VHOST_F_LOG_ALL");
  }
  RETURN_IF_ERROR(
      frontend_->SetLogBase(log->size_bytes(), log->offset(), log->fd()));
  log_ = std::move(log);
  RETURN_IF_ERROR(SetLogAll(true));
  for (const auto& [q, layout] : started_) {
    RETURN_IF_ERROR(SetVringAddr(q, layout, /*log=*/true));
  }
  return absl::OkStatus();
}

absl::Status VhostUserDevice::SetLogAll(bool on) {
  RETURN_IF_ERROR(
      frontend_->SetFeatures(features_ | (on ? vhost::kLogAllMask : 0)));
  log_all_ = on;
  return absl::OkStatus();
}

absl::Status VhostUserDevice::StopLogging() {
  RETURN_IF_ERROR(SetLogAll(false));
  for (const auto& [q, layout] : started_) {
    RETURN_IF_ERROR(SetVringAddr(q, layout, /*log=*/false));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> VhostUserDevice::SaveState() {
  ASSIGN_OR_RETURN(auto ends, vhost::MakePipe());
  UniqueFd read_end = std::move(ends.first);
  // The write end goes to the back-end (Frontend closes our copy, so EOF
  // arrives when the back-end closes its copy).
  ASSIGN_OR_RETURN(UniqueFd theirs,
                   frontend_->SetDeviceStateFd(vhost::TransferDirection::kSave,
                                               vhost::MigrationPhase::kStopped,
                                               std::move(ends.second)));
  // A back-end may answer with a channel of its own instead ("use yours"
  // clear): then that is what we read.
  if (theirs.valid()) read_end = std::move(theirs);
  const absl::Time deadline = absl::Now() + options_.state_timeout;
  std::string state;
  char buf[1 << 16];
  for (;;) {
    ASSIGN_OR_RETURN(const size_t n, vhost::ReadSome(read_end.get(), buf,
                                                     sizeof(buf), deadline));
    if (n == 0) break;
    state.append(buf, n);
  }
  read_end.reset();
  RETURN_IF_ERROR(frontend_->CheckDeviceState());
  return state;
}

absl::Status VhostUserDevice::LoadState(absl::string_view state) {
  ASSIGN_OR_RETURN(auto ends, vhost::MakePipe());
  UniqueFd write_end = std::move(ends.second);
  ASSIGN_OR_RETURN(UniqueFd theirs,
                   frontend_->SetDeviceStateFd(vhost::TransferDirection::kLoad,
                                               vhost::MigrationPhase::kStopped,
                                               std::move(ends.first)));
  if (theirs.valid()) write_end = std::move(theirs);
  RETURN_IF_ERROR(vhost::SetNonBlocking(write_end.get()));
  RETURN_IF_ERROR(vhost::WriteAll(write_end.get(), state,
                                  absl::Now() + options_.state_timeout));
  // EOF tells the back-end the state is complete.
  write_end.reset();
  return frontend_->CheckDeviceState();
}

}  // namespace vhostmig::guest
