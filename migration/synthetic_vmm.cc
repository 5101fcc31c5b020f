#include "migration/synthetic_vmm.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace vhostmig::migration {

absl::StatusOr<std::vector<RingConfig>> SyntheticGuestRings(
    guest::SyntheticGuest& guest) {
  std::vector<RingConfig> rings;
  const std::vector<vhost::VringLayout> layouts = guest.Layouts();
  for (uint32_t q = 0; q < layouts.size(); ++q) {
    const vhost::VringLayout& l = layouts[q];
    RingConfig r;
    r.index = q;
    r.size = l.size;
    r.addr.index = q;
    r.addr.flags = 0;
    ASSIGN_OR_RETURN(r.addr.desc_user_addr, guest.device().FrontendAddress(
                                                l.desc_gpa, 16ull * l.size));
    ASSIGN_OR_RETURN(
        r.addr.avail_user_addr,
        guest.device().FrontendAddress(l.avail_gpa, 6 + 2ull * l.size));
    ASSIGN_OR_RETURN(r.addr.used_user_addr, guest.device().FrontendAddress(
                                                l.used_gpa, 6 + 8ull * l.size));
    // What the back-end logs used-ring writes against (vhost-user.rst,
    // "Migration").
    r.addr.log_guest_addr = l.used_gpa;
    r.kick_fd = guest.transport().kick_fd(q);
    r.call_fd = guest.transport().call_fd(q);
    rings.push_back(r);
  }
  return rings;
}

std::vector<RingConfig> SyntheticSourceVmm::rings() const {
  absl::StatusOr<std::vector<RingConfig>> rings = SyntheticGuestRings(*guest_);
  // The layouts come from the guest's own RAM, so this cannot fail for a
  // guest that was attached; an empty list would make Setup send nothing.
  return rings.ok() ? *std::move(rings) : std::vector<RingConfig>{};
}

absl::StatusOr<std::pair<int, int>> SyntheticDestinationVmm::RingNotifiers(
    uint32_t index) {
  if (!guest_ || index >= guest_->transport().num_queues()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ring ", index, " has no notifiers here"));
  }
  return std::make_pair(guest_->transport().kick_fd(index),
                        guest_->transport().call_fd(index));
}

}  // namespace vhostmig::migration
