#include "migration/destination_migration.h"

#include <bit>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "base/unique_fd.h"
#include "migration/device_control.h"
#include "vhost/frontend/state_pipe.h"
#include "vhost/protocol/features.h"

namespace vhostmig::migration {
namespace {

using vhost::FeatureMask;
using vhost::ProtocolFeature;

constexpr absl::Duration kPollSlice = absl::Milliseconds(50);

}  // namespace

DestinationMigration::DestinationMigration(DestinationVmm* vmm,
                                           MemoryTransport* transport,
                                           DestinationOptions options)
    : vmm_(vmm), transport_(transport), options_(std::move(options)) {}

bool DestinationMigration::Cancel() {
  absl::MutexLock lock(&mu_);
  if (committed_) return false;
  cancel_requested_ = true;
  return true;
}

DestinationProgress DestinationMigration::progress() const {
  absl::MutexLock lock(&mu_);
  return progress_;
}

absl::Status DestinationMigration::CheckCancel() const {
  absl::MutexLock lock(&mu_);
  if (cancel_requested_) {
    return absl::CancelledError(
        absl::StrCat("migration cancelled in ", PhaseName(progress_.phase)));
  }
  return absl::OkStatus();
}

void DestinationMigration::Enter(DestinationPhase phase) {
  {
    absl::MutexLock lock(&mu_);
    progress_.phase = phase;
  }
  Emit();
}

void DestinationMigration::Emit() {
  if (!options_.observer) return;
  DestinationProgress p;
  {
    absl::MutexLock lock(&mu_);
    p = progress_;
  }
  options_.observer(p);
}

absl::StatusOr<MigrationMessage> DestinationMigration::Next() {
  const absl::Time deadline = absl::Now() + options_.message_timeout;
  for (;;) {
    RETURN_IF_ERROR(CheckCancel());
    absl::StatusOr<MigrationMessage> m = transport_->Receive(kPollSlice);
    if (absl::IsDeadlineExceeded(m.status()) && absl::Now() < deadline) {
      continue;
    }
    if (!m.ok()) return m.status();
    if (const auto* abort = std::get_if<Abort>(&*m)) {
      abort_received_ = true;
      return absl::AbortedError(
          absl::StrCat("the source gave up: ", abort->reason));
    }
    return m;
  }
}

absl::Status DestinationMigration::Run() {
  absl::Status status = RunPhases();
  {
    absl::MutexLock lock(&mu_);
    if (committed_) {
      progress_.phase = DestinationPhase::kDone;
      return status;
    }
  }
  if (!abort_received_) {
    (void)transport_->Send(Abort{status.ToString()}, options_.message_timeout);
  }
  vmm_->Teardown();
  Enter(DestinationPhase::kTornDown);
  return status;
}

absl::Status DestinationMigration::RunPhases() {
  Enter(DestinationPhase::kPrepare);
  RETURN_IF_ERROR(Prepare());
  Enter(DestinationPhase::kReceivePages);
  RETURN_IF_ERROR(ReceivePages());
  Enter(DestinationPhase::kLoadState);
  RETURN_IF_ERROR(LoadState());
  Enter(DestinationPhase::kCheck);
  RETURN_IF_ERROR(Check());
  RETURN_IF_ERROR(Start());
  Enter(DestinationPhase::kDone);
  return absl::OkStatus();
}

absl::Status DestinationMigration::Prepare() {
  ASSIGN_OR_RETURN(MigrationMessage m, Next());
  auto* hello = std::get_if<Hello>(&m);
  if (hello == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected Hello, got ", MessageName(m)));
  }
  hello_ = std::move(*hello);
  const auto& regions = vmm_->memory().regions();
  bool same = regions.size() == hello_.regions.size();
  for (size_t i = 0; same && i < regions.size(); ++i) {
    same = regions[i]->gpa() == hello_.regions[i].guest_phys_addr &&
           regions[i]->size() == hello_.regions[i].memory_size;
  }
  if (!same) {
    std::string want;
    for (const RegionDescription& r : hello_.regions) {
      absl::StrAppend(&want, " [0x", absl::Hex(r.guest_phys_addr), ", +0x",
                      absl::Hex(r.memory_size), ")");
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "destination guest memory does not match the source's layout:", want));
  }
  vhost::Frontend& f = vmm_->frontend();
  const uint64_t missing = hello_.features & ~f.backend_features();
  if (missing != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("the destination back-end lacks features 0x",
                     absl::Hex(missing), " the source negotiated"));
  }
  if (hello_.device_state && !(f.BackendHas(ProtocolFeature::kDeviceState) &&
                               (f.acked_protocol_features() &
                                FeatureMask(ProtocolFeature::kDeviceState)))) {
    return absl::FailedPreconditionError(
        "the destination back-end lacks DEVICE_STATE (protocol feature 19) "
        "but the source's device state must be loaded");
  }
  return absl::OkStatus();
}

absl::Status DestinationMigration::ReceivePages() {
  const vhost::GuestMemoryMap& memory = vmm_->memory();
  for (;;) {
    ASSIGN_OR_RETURN(MigrationMessage m, Next());
    if (auto* batch = std::get_if<PageBatch>(&m)) {
      uint64_t pages = 0;
      for (size_t i = 0; i < batch->extents.size(); ++i) {
        const PageExtent& e = batch->extents[i];
        if (absl::Status s = ApplyExtent(e, memory, &received_); !s.ok()) {
          return absl::Status(
              s.code(), absl::StrCat("PageBatch of round ", batch->round,
                                     ", extent ", i + 1, " of ",
                                     batch->extents.size(), ": ", s.message()));
        }
        pages += e.page_count;
      }
      {
        absl::MutexLock lock(&mu_);
        progress_.pages_received += pages;
      }
      Emit();
      continue;
    }
    if (auto* stopped = std::get_if<DeviceStopped>(&m)) {
      stopped_ = std::move(*stopped);
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "expected PageBatch or DeviceStopped, got ", MessageName(m)));
  }
}

absl::Status DestinationMigration::LoadState() {
  if (!hello_.device_state) {
    ASSIGN_OR_RETURN(MigrationMessage m, Next());
    auto* end = std::get_if<DeviceStateEnd>(&m);
    if (end == nullptr || end->total_bytes != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expected an empty DeviceStateEnd, got ", MessageName(m)));
    }
    return absl::OkStatus();
  }
  vhost::Frontend& f = vmm_->frontend();
  ASSIGN_OR_RETURN(auto ends, vhost::MakePipe());
  UniqueFd write_end = std::move(ends.second);
  ASSIGN_OR_RETURN(UniqueFd theirs,
                   f.SetDeviceStateFd(vhost::TransferDirection::kLoad,
                                      vhost::MigrationPhase::kStopped,
                                      std::move(ends.first)));
  if (theirs.valid()) write_end = std::move(theirs);
  RETURN_IF_ERROR(vhost::SetNonBlocking(write_end.get()));
  const absl::Time deadline = absl::Now() + options_.state_timeout;
  uint64_t total = 0;
  uint32_t crc = 0;
  absl::Status status = absl::OkStatus();
  for (;;) {
    absl::StatusOr<MigrationMessage> m = Next();
    if (!m.ok()) {
      status = m.status();
      break;
    }
    if (auto* chunk = std::get_if<DeviceStateChunk>(&*m)) {
      status = vhost::WriteAll(write_end.get(), chunk->bytes, deadline);
      if (!status.ok()) break;
      total += chunk->bytes.size();
      crc = Crc32cExtend(crc, chunk->bytes.data(), chunk->bytes.size());
      {
        absl::MutexLock lock(&mu_);
        progress_.state_bytes = total;
      }
      Emit();
      continue;
    }
    if (auto* end = std::get_if<DeviceStateEnd>(&*m)) {
      if (end->total_bytes != total) {
        status = absl::DataLossError(
            absl::StrCat("device state: the source sent ", end->total_bytes,
                         " bytes, ", total, " arrived"));
      } else if (end->crc32c != crc) {
        // The back-end may have accepted the damaged bytes (its format need
        // not have checksums); failing here tears it down before Ready.
        status = absl::DataLossError(absl::StrFormat(
            "device state: damaged in transit: its %u bytes have CRC-32C "
            "0x%08x, the source's 0x%08x",
            total, crc, end->crc32c));
      }
      break;
    }
    status = absl::InvalidArgumentError(absl::StrCat(
        "expected DeviceStateChunk or DeviceStateEnd, got ", MessageName(*m)));
    break;
  }
  // EOF ends the back-end's load; CHECK_DEVICE_STATE reports it, and joins
  // its worker even when we stopped half way (a truncated stream fails).
  write_end.reset();
  Enter(DestinationPhase::kCheck);
  absl::Status checked = f.CheckDeviceState();
  RETURN_IF_ERROR(status);
  return checked;
}

absl::Status DestinationMigration::Check() {
  RETURN_IF_ERROR(CheckCancel());
  for (const auto& region : vmm_->memory().regions()) {
    const uint64_t first = region->gpa() / kPageSize;
    const uint64_t end = first + region->size() / kPageSize;
    for (uint64_t p = first; p < end; ++p) {
      if (p / 64 >= received_.size() ||
          !((received_[p / 64] >> (p % 64)) & 1)) {
        return absl::DataLossError(absl::StrCat("guest page ", p, " (gpa 0x",
                                                absl::Hex(p * kPageSize),
                                                ") never arrived"));
      }
    }
  }
  vhost::Frontend& f = vmm_->frontend();
  RETURN_IF_ERROR(f.SetFeatures(hello_.features));
  std::vector<vhost::VhostUserMemoryRegion> regions;
  std::vector<int> fds;
  for (const auto& region : vmm_->memory().regions()) {
    const vhost::MemoryRegionLayout& l = region->layout();
    regions.push_back(
        {l.guest_phys_addr, l.memory_size, l.userspace_addr, l.mmap_offset});
    fds.push_back(region->fd());
  }
  RETURN_IF_ERROR(f.SetMemTable(regions, fds));
  RETURN_IF_ERROR(vmm_->LoadGuestState(stopped_.guest_state));
  RETURN_IF_ERROR(CheckCancel());
  return transport_->Send(Ready{}, options_.message_timeout);
}

absl::Status DestinationMigration::Start() {
  ASSIGN_OR_RETURN(MigrationMessage m, Next());
  if (!std::holds_alternative<Commit>(m)) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected Commit, got ", MessageName(m)));
  }
  {
    absl::MutexLock lock(&mu_);
    committed_ = true;
  }
  Enter(DestinationPhase::kStart);
  vhost::Frontend& f = vmm_->frontend();
  for (const RingDescription& ring : stopped_.rings) {
    ASSIGN_OR_RETURN(auto notifiers, vmm_->RingNotifiers(ring.index));
    RETURN_IF_ERROR(StartRing(f, ring.size, ring.addr, ring.base,
                              notifiers.first, notifiers.second,
                              /*log=*/false));
  }
  return vmm_->ResumeGuest();
}

}  // namespace vhostmig::migration
