// Session: guest memory table and dirty log requests.
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "vhost/backend/session.h"

namespace vhostmig::vhost {
namespace {

MemoryRegionLayout ToLayout(const VhostUserMemoryRegion& r) {
  MemoryRegionLayout layout;
  layout.guest_phys_addr = r.guest_phys_addr;
  layout.memory_size = r.memory_size;
  layout.userspace_addr = r.userspace_addr;
  layout.mmap_offset = r.mmap_offset;
  return layout;
}

}  // namespace

absl::Status Session::InstallMemory(GuestMemoryMap memory) {
  // Started rings are re-set-up between two passes; the old regions stay
  // mapped until no ring and no snapshot refers to them.
  absl::Status first_error;
  for (auto& ring : rings_) {
    absl::Status s = ring->UpdateMemory(memory, acked_features_);
    if (!s.ok() && first_error.ok()) {
      first_error = absl::Status(
          s.code(), absl::StrCat("ring ", ring->index(), ": ", s.message()));
    }
  }
  memory_ = std::move(memory);
  return first_error;
}

absl::StatusOr<Session::Reply> Session::OnSetMemTable(Message& m) {
  ASSIGN_OR_RETURN(std::vector<VhostUserMemoryRegion> regions,
                   DecodeMemoryTable(m));
  std::vector<std::shared_ptr<MemoryRegion>> mapped;
  mapped.reserve(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    absl::StatusOr<std::shared_ptr<MemoryRegion>> region =
        MemoryRegion::Map(std::move(m.fds[i]), ToLayout(regions[i]));
    if (!region.ok()) {
      return absl::Status(region.status().code(),
                          absl::StrCat("SET_MEM_TABLE: region ", i, ": ",
                                       region.status().message()));
    }
    mapped.push_back(*std::move(region));
  }
  absl::StatusOr<GuestMemoryMap> memory =
      GuestMemoryMap::Create(std::move(mapped));
  if (!memory.ok()) {
    return absl::Status(
        memory.status().code(),
        absl::StrCat("SET_MEM_TABLE: ", memory.status().message()));
  }
  RETURN_IF_ERROR(InstallMemory(*std::move(memory)));
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnAddMemReg(Message& m) {
  ASSIGN_OR_RETURN(const VhostUserSingleMemoryRegion single,
                   PayloadAs<VhostUserSingleMemoryRegion>(m));
  RETURN_IF_ERROR(CheckMemoryRegion(m, single.region));
  if (memory_.regions().size() >= options_->max_mem_slots) {
    return absl::ResourceExhaustedError(
        absl::StrCat("ADD_MEM_REG: all ", options_->max_mem_slots,
                     " memory slots are in use"));
  }
  absl::StatusOr<std::shared_ptr<MemoryRegion>> region =
      MemoryRegion::Map(std::move(m.fds[0]), ToLayout(single.region));
  if (!region.ok()) {
    return absl::Status(
        region.status().code(),
        absl::StrCat("ADD_MEM_REG: ", region.status().message()));
  }
  absl::StatusOr<GuestMemoryMap> memory = memory_.WithRegion(*region);
  if (!memory.ok()) {
    return absl::Status(
        memory.status().code(),
        absl::StrCat("ADD_MEM_REG: ", memory.status().message()));
  }
  RETURN_IF_ERROR(InstallMemory(*std::move(memory)));
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnRemMemReg(const Message& m) {
  // A stray fd is allowed and dropped with the message (vhost-user.rst,
  // REM_MEM_REG).
  ASSIGN_OR_RETURN(const VhostUserSingleMemoryRegion single,
                   PayloadAs<VhostUserSingleMemoryRegion>(m));
  absl::StatusOr<GuestMemoryMap> memory =
      memory_.WithoutRegion(ToLayout(single.region));
  if (!memory.ok()) {
    return absl::Status(
        memory.status().code(),
        absl::StrCat("REM_MEM_REG: ", memory.status().message()));
  }
  RETURN_IF_ERROR(InstallMemory(*std::move(memory)));
  return Reply();
}

absl::StatusOr<Session::Reply> Session::OnSetLogBase(Message& m) {
  ASSIGN_OR_RETURN(const VhostUserLog log, PayloadAs<VhostUserLog>(m));
  absl::StatusOr<std::shared_ptr<DirtyLog>> mapped =
      DirtyLog::Map(std::move(m.fds[0]), log.size, log.offset);
  if (!mapped.ok()) {
    return absl::Status(
        mapped.status().code(),
        absl::StrCat("SET_LOG_BASE: ", mapped.status().message()));
  }
  // Switch every ring to the new log, then let the old one go: a ring in
  // the middle of a pass keeps its own reference until it is done, so no
  // mark is lost and none lands in unmapped memory.
  log_ = *std::move(mapped);
  ApplyLogToRings();
  // With LOG_SHMFD the front-end waits for a reply (vhost-user.rst,
  // "Communication"); u64 zero is what QEMU and libvhost-user exchange.
  if (HasProtocolFeature(acked_protocol_features_,
                         ProtocolFeature::kLogShmfd) ||
      m.need_reply()) {
    return MakeReply(m.request, uint64_t{0});
  }
  return Reply();
}

void Session::ApplyLogToRings() {
  std::shared_ptr<DirtyLog> active = logging() ? log_ : nullptr;
  for (auto& ring : rings_) ring->SetLog(active);
}

}  // namespace vhostmig::vhost
