#include "tests/vhost/backend/rig.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/errno_status.h"
#include "base/status_macros.h"
#include "vhost/protocol/codec.h"
#include "vhost/protocol/features.h"
#include "vhost/protocol/validation.h"

namespace vhostmig::vhost::testing {

absl::StatusOr<std::unique_ptr<Rig>> Rig::Create(BackendOptions options) {
  std::unique_ptr<Rig> rig(new Rig());
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    return LastErrnoStatus("socketpair");
  }
  UniqueFd front(sv[0]);
  UniqueFd back(sv[1]);
  options.exit_on_disconnect = true;
  rig->server_ = std::make_unique<BackendServer>(&rig->device_, options);
  Rig* r = rig.get();
  rig->server_thread_ = std::thread([r, back = std::move(back)]() mutable {
    r->server_status_ = r->server_->ServeConnection(std::move(back));
  });
  ASSIGN_OR_RETURN(rig->frontend_, Frontend::FromFd(std::move(front)));

  MemoryRegionLayout layout;
  layout.guest_phys_addr = 0;
  layout.memory_size = kGuestSize;
  layout.userspace_addr = kFrontendBase;
  ASSIGN_OR_RETURN(rig->region_, MemoryRegion::CreateMemfd(layout));
  ASSIGN_OR_RETURN(rig->memory_, GuestMemoryMap::Create({rig->region_}));
  return rig;
}

Rig::~Rig() {
  frontend_.reset();  // closes the socket: the back-end sees a disconnect
  server_->Shutdown();
  if (server_thread_.joinable()) server_thread_.join();
}

absl::Status Rig::Negotiate(uint64_t extra_features, bool protocol_features) {
  RETURN_IF_ERROR(frontend_->SetOwner());
  uint64_t features = device_.Features() | extra_features;
  if (protocol_features) features |= kProtocolFeaturesMask;
  if (protocol_features) {
    const uint64_t wanted = FeatureMask(ProtocolFeature::kReplyAck) |
                            FeatureMask(ProtocolFeature::kLogShmfd) |
                            FeatureMask(ProtocolFeature::kConfig) |
                            FeatureMask(ProtocolFeature::kMq) |
                            FeatureMask(ProtocolFeature::kDeviceState);
    RETURN_IF_ERROR(frontend_->SetProtocolFeatures(
        wanted & frontend_->backend_protocol_features()));
  }
  RETURN_IF_ERROR(frontend_->SetFeatures(features));
  VhostUserMemoryRegion region;
  region.guest_phys_addr = 0;
  region.memory_size = kGuestSize;
  region.userspace_addr = kFrontendBase;
  region.mmap_offset = 0;
  const int fds[] = {region_->fd()};
  return frontend_->SetMemTable({&region, 1}, fds);
}

absl::Status Rig::StartRing(int i, bool enable, uint16_t base) {
  RingFds& ring = rings_[i];
  RETURN_IF_ERROR(ring.driver.Init(memory_, RingGpa(i), kRingSize,
                                   /*event_idx=*/false));
  ring.kick.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  ring.call.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  const VringLayout layout = ring.driver.layout();
  RETURN_IF_ERROR(frontend_->SetVringNum(i, kRingSize));
  RETURN_IF_ERROR(frontend_->SetVringBase(i, base));
  VhostUserVringAddr addr{};
  addr.index = i;
  addr.desc_user_addr = layout.desc_gpa + kFrontendBase;
  addr.avail_user_addr = layout.avail_gpa + kFrontendBase;
  addr.used_user_addr = layout.used_gpa + kFrontendBase;
  addr.log_guest_addr = layout.used_gpa;
  addr.flags = kVringAddrFlagLog;
  RETURN_IF_ERROR(frontend_->SetVringAddr(addr));
  RETURN_IF_ERROR(frontend_->SetVringCall(i, ring.call.get()));
  RETURN_IF_ERROR(frontend_->SetVringKick(i, ring.kick.get()));
  if (enable) RETURN_IF_ERROR(frontend_->SetVringEnable(i, true));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Rig::AddWithoutKick(int i, const std::string& data) {
  const uint64_t in = next_buffer_;
  const uint64_t out = in + data.size();
  next_buffer_ = out + data.size();
  if (next_buffer_ > kGuestSize) {
    return absl::ResourceExhaustedError("test buffer space exhausted");
  }
  RETURN_IF_ERROR(rings_[i].driver.WriteGuest(in, data.data(), data.size()));
  const uint32_t len = static_cast<uint32_t>(data.size());
  RETURN_IF_ERROR(
      rings_[i]
          .driver.Add({GuestBuffer{in, len}}, {GuestBuffer{out, len}})
          .status());
  return out;
}

absl::Status Rig::Kick(int i) {
  const uint64_t one = 1;
  if (::write(rings_[i].kick.get(), &one, sizeof(one)) != sizeof(one)) {
    return LastErrnoStatus("kick");
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Rig::Submit(int i, const std::string& data) {
  ASSIGN_OR_RETURN(const uint64_t out, AddWithoutKick(i, data));
  RETURN_IF_ERROR(Kick(i));
  return out;
}

absl::Status Rig::WaitUsed(int i, int count) {
  const absl::Time deadline = absl::Now() + kWait;
  int seen = 0;
  while (seen < count) {
    while (seen < count && rings_[i].driver.PollUsed().has_value()) ++seen;
    if (seen == count) break;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(
          "ring ", i, ": ", seen, " of ", count, " used elements arrived"));
    }
    pollfd pfd{rings_[i].call.get(), POLLIN, 0};
    const int n = ::poll(&pfd, 1, absl::ToInt64Milliseconds(left) + 1);
    if (n > 0) {
      uint64_t value;
      (void)!::read(rings_[i].call.get(), &value, sizeof(value));
    }
  }
  return absl::OkStatus();
}

std::string Rig::ReadGuest(uint64_t gpa, size_t len) const {
  std::string out(len, '\0');
  if (!memory_.Read(gpa, out.data(), len).ok()) return "<unbacked>";
  return out;
}

absl::StatusOr<Message> Rig::Raw(Message m) {
  const int fd = frontend_->socket();
  const bool expects_reply = m.need_reply() || HasInherentReply(m.request);
  RETURN_IF_ERROR(WriteMessage(fd, m));
  if (!expects_reply) return Message();
  return ReadMessage(fd);
}

std::set<uint64_t> Pages(uint64_t gpa, uint64_t len) {
  std::set<uint64_t> pages;
  for (uint64_t p = gpa / kDirtyPageSize; p <= (gpa + len - 1) / kDirtyPageSize;
       ++p) {
    pages.insert(p);
  }
  return pages;
}

std::set<uint64_t> DirtyPages(DirtyLog& log) {
  std::set<uint64_t> pages;
  log.Harvest([&](uint64_t page) { pages.insert(page); });
  return pages;
}

}  // namespace vhostmig::vhost::testing
