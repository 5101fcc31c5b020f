// The synthetic guest (guest/synthetic_guest.h) as the VMM of a migration:
// SyntheticSourceVmm and SyntheticDestinationVmm adapt it to the
// coordinator's SourceVmm / DestinationVmm (vmm.h). This is the embedded
// default of the agents, and what the tests migrate.
//
// Thread-safety: as the interfaces (one migration thread).
#ifndef VHOSTMIG_MIGRATION_SYNTHETIC_VMM_H_
#define VHOSTMIG_MIGRATION_SYNTHETIC_VMM_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "guest/synthetic_guest.h"
#include "migration/vmm.h"

namespace vhostmig::migration {

// The rings a synthetic guest gave its device, as SET_VRING_* described
// them.
absl::StatusOr<std::vector<RingConfig>> SyntheticGuestRings(
    guest::SyntheticGuest& guest);

class SyntheticSourceVmm : public SourceVmm {
 public:
  // `guest` must outlive this object.
  explicit SyntheticSourceVmm(guest::SyntheticGuest* guest) : guest_(guest) {}

  const vhost::GuestMemoryMap& memory() const override {
    return guest_->ram().memory();
  }
  vhost::Frontend& frontend() override { return guest_->device().frontend(); }
  std::vector<RingConfig> rings() const override;
  absl::Status PauseGuest() override { return guest_->Pause(); }
  absl::Status ResumeGuest() override { return guest_->Resume(); }
  uint64_t HarvestGuestDirty(std::vector<uint64_t>* bitmap) override {
    return guest_->guest_dirty()->HarvestInto(bitmap);
  }
  absl::StatusOr<std::string> SaveGuestState() override {
    return guest_->SaveState();
  }

 private:
  guest::SyntheticGuest* guest_;
};

class SyntheticDestinationVmm : public DestinationVmm {
 public:
  // Takes the incoming guest (SyntheticGuest::CreateIncoming). With
  // `start_vcpu`, ResumeGuest starts its vCPU thread.
  SyntheticDestinationVmm(std::unique_ptr<guest::SyntheticGuest> guest,
                          bool start_vcpu = true)
      : guest_(std::move(guest)), start_vcpu_(start_vcpu) {}

  const vhost::GuestMemoryMap& memory() const override {
    return guest_->ram().memory();
  }
  vhost::Frontend& frontend() override { return guest_->device().frontend(); }
  absl::StatusOr<std::pair<int, int>> RingNotifiers(uint32_t index) override;
  absl::Status LoadGuestState(absl::string_view guest_state) override {
    return guest_->Rebuild(guest_state);
  }
  absl::Status ResumeGuest() override {
    return start_vcpu_ ? guest_->StartVcpu() : absl::OkStatus();
  }
  // Destroys the incoming guest: the device connection closes, so the
  // back-end forgets what it loaded.
  void Teardown() override { guest_.reset(); }

  // Null after Teardown.
  guest::SyntheticGuest* guest() { return guest_.get(); }
  std::unique_ptr<guest::SyntheticGuest> TakeGuest() {
    return std::move(guest_);
  }

 private:
  std::unique_ptr<guest::SyntheticGuest> guest_;
  bool start_vcpu_;
};

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_SYNTHETIC_VMM_H_
