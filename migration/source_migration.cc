#include "migration/source_migration.h"

#include <algorithm>
#include <bit>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "base/crc32c.h"
#include "base/status_macros.h"
#include "migration/device_control.h"
#include "vhost/frontend/state_pipe.h"
#include "vhost/protocol/features.h"

namespace vhostmig::migration {
namespace {

using vhost::FeatureMask;
using vhost::ProtocolFeature;

// Receive slices while waiting for the destination, so Cancel() is noticed.
constexpr absl::Duration kPollSlice = absl::Milliseconds(50);

uint64_t PopCount(const std::vector<uint64_t>& bitmap) {
  uint64_t n = 0;
  for (uint64_t w : bitmap) n += std::popcount(w);
  return n;
}

}  // namespace

SourceMigration::SourceMigration(SourceVmm* vmm, MemoryTransport* transport,
                                 SourceOptions options)
    : vmm_(vmm), transport_(transport), options_(std::move(options)) {}

SourceMigration::~SourceMigration() = default;

bool SourceMigration::Cancel() {
  absl::MutexLock lock(&mu_);
  if (committed_) return false;
  cancel_requested_ = true;
  return true;
}

bool SourceMigration::committed() const {
  absl::MutexLock lock(&mu_);
  return committed_;
}

SourceProgress SourceMigration::progress() const {
  absl::MutexLock lock(&mu_);
  return progress_;
}

absl::Status SourceMigration::CheckCancel() const {
  absl::MutexLock lock(&mu_);
  if (cancel_requested_) {
    return absl::CancelledError(
        absl::StrCat("migration cancelled in ", PhaseName(progress_.phase)));
  }
  return absl::OkStatus();
}

void SourceMigration::Enter(SourcePhase phase) {
  {
    absl::MutexLock lock(&mu_);
    progress_.phase = phase;
  }
  Emit();
}

void SourceMigration::Emit() {
  if (!options_.observer) return;
  SourceProgress p;
  {
    absl::MutexLock lock(&mu_);
    if (guest_paused_) progress_.guest_paused_for = absl::Now() - paused_at_;
    p = progress_;
  }
  options_.observer(p);
}

absl::Status SourceMigration::Run() {
  absl::Status status = RunPhases();
  if (committed()) {
    Enter(SourcePhase::kDone);
    return status;
  }
  // Not handed over: the source must run again, and the destination learn
  // that it will not get the guest.
  Enter(SourcePhase::kCancelling);
  // Sent even before Hello: a destination waiting for us tears down at
  // once instead of timing out.
  if (!abort_received_) {
    (void)transport_->Send(Abort{status.ToString()}, options_.message_timeout);
  }
  absl::Status restored = Restore();
  Enter(SourcePhase::kDone);
  if (!restored.ok()) {
    return absl::Status(
        status.code(),
        absl::StrCat(status.message(), "; restoring the source failed too: ",
                     restored.ToString()));
  }
  return status;
}

absl::Status SourceMigration::RunPhases() {
  Enter(SourcePhase::kSetup);
  RETURN_IF_ERROR(Setup());
  RETURN_IF_ERROR(CheckCancel());
  Enter(SourcePhase::kLogStart);
  RETURN_IF_ERROR(LogStart());
  RETURN_IF_ERROR(CheckCancel());
  Enter(SourcePhase::kPreCopy);
  RETURN_IF_ERROR(PreCopy());
  RETURN_IF_ERROR(CheckCancel());
  Enter(SourcePhase::kStop);
  RETURN_IF_ERROR(Stop());
  RETURN_IF_ERROR(CheckCancel());
  Enter(SourcePhase::kFinalSync);
  RETURN_IF_ERROR(FinalSync());
  RETURN_IF_ERROR(CheckCancel());
  Enter(SourcePhase::kSaveState);
  RETURN_IF_ERROR(SaveState());
  RETURN_IF_ERROR(CheckCancel());
  Enter(SourcePhase::kCheck);
  RETURN_IF_ERROR(Check());
  RETURN_IF_ERROR(CheckCancel());
  return Handover();
}

absl::Status SourceMigration::Setup() {
  vhost::Frontend& f = vmm_->frontend();
  std::vector<std::string> missing;
  if (!(f.backend_features() & vhost::kLogAllMask)) {
    missing.push_back("VHOST_F_LOG_ALL (feature 26)");
  }
  if (!f.BackendHas(ProtocolFeature::kLogShmfd)) {
    missing.push_back("LOG_SHMFD (protocol feature 1)");
  } else if (!(f.acked_protocol_features() &
               FeatureMask(ProtocolFeature::kLogShmfd))) {
    missing.push_back("LOG_SHMFD acked by the front-end");
  }
  const bool offers_state = f.BackendHas(ProtocolFeature::kDeviceState);
  const bool acked_state = (f.acked_protocol_features() &
                            FeatureMask(ProtocolFeature::kDeviceState)) != 0;
  if (options_.require_device_state && !offers_state) {
    missing.push_back(
        "DEVICE_STATE (protocol feature 19), needed because the device has "
        "internal state");
  } else if (options_.require_device_state && !acked_state) {
    missing.push_back("DEVICE_STATE acked by the front-end");
  }
  if (!missing.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the back-end cannot be migrated: it lacks ",
                     absl::StrJoin(missing, ", "), " (features 0x",
                     absl::Hex(f.backend_features()), ", protocol features 0x",
                     absl::Hex(f.backend_protocol_features()), ")"));
  }
  device_state_ = offers_state && acked_state;
  rings_ = vmm_->rings();
  features_ = f.acked_features() & ~vhost::kLogAllMask;

  Hello hello;
  for (const auto& region : vmm_->memory().regions()) {
    hello.regions.push_back({region->gpa(), region->size()});
  }
  hello.features = features_;
  hello.device_state = device_state_;
  RETURN_IF_ERROR(transport_->Send(std::move(hello), options_.message_timeout));
  hello_sent_ = true;
  return absl::OkStatus();
}

absl::Status SourceMigration::LogStart() {
  vhost::Frontend& f = vmm_->frontend();
  ASSIGN_OR_RETURN(log_, vhost::DirtyLog::Create(vmm_->memory().end_gpa()));
  RETURN_IF_ERROR(f.SetLogBase(log_->size_bytes(), log_->offset(), log_->fd()));
  // SET_FEATURES(+LOG_ALL); the Frontend then re-enables the rings it had
  // enabled (frontend.h), so back-ends that disable rings here keep going.
  log_all_set_ = true;
  RETURN_IF_ERROR(f.SetFeatures(features_ | vhost::kLogAllMask));
  ring_addrs_logged_ = true;
  for (const RingConfig& ring : rings_) {
    RETURN_IF_ERROR(SetRingAddr(f, ring.addr, /*log=*/true));
  }
  // The guest's own writes count from here; round 1 sends everything.
  std::vector<uint64_t> discard;
  vmm_->HarvestGuestDirty(&discard);
  return absl::OkStatus();
}

uint64_t SourceMigration::Harvest(std::vector<uint64_t>* bitmap) {
  log_->HarvestInto(bitmap);
  vmm_->HarvestGuestDirty(bitmap);
  return PopCount(*bitmap);
}

absl::Status SourceMigration::SendBatch(std::vector<PageExtent> extents,
                                        uint32_t round) {
  if (extents.empty()) return absl::OkStatus();
  uint64_t pages = 0;
  uint64_t bytes = 0;
  for (const PageExtent& e : extents) {
    pages += e.page_count;
    bytes += e.data.size();
  }
  PageBatch batch{round, std::move(extents)};
  RETURN_IF_ERROR(transport_->Send(std::move(batch), options_.message_timeout));
  {
    absl::MutexLock lock(&mu_);
    progress_.pages_sent += pages;
    progress_.page_bytes_sent += bytes;
    progress_.pages_remaining -= std::min(progress_.pages_remaining, pages);
  }
  Emit();
  RETURN_IF_ERROR(CheckCancel());
  return CheckForAbort();
}

absl::Status SourceMigration::CheckForAbort() {
  // Before Ready the destination sends nothing but an Abort, so anything
  // waiting is read without blocking. A transport error is left for the
  // next Send to report, as before.
  absl::StatusOr<MigrationMessage> m =
      transport_->Receive(absl::ZeroDuration());
  if (!m.ok()) return absl::OkStatus();
  if (const auto* abort = std::get_if<Abort>(&*m)) {
    abort_received_ = true;
    return absl::AbortedError(
        absl::StrCat("the destination gave up: ", abort->reason));
  }
  return absl::InternalError(
      absl::StrCat("expected nothing from the destination before Ready, got ",
                   MessageName(*m)));
}

absl::Status SourceMigration::SendPages(const std::vector<uint64_t>* bitmap,
                                        uint32_t flags, uint32_t round) {
  const vhost::GuestMemoryMap& memory = vmm_->memory();
  ExtentBuilder builder(&memory, flags, options_.max_extent_pages);
  auto add = [&](uint64_t page) -> absl::Status {
    RETURN_IF_ERROR(builder.AddPage(page));
    if (builder.data_bytes() >= options_.batch_bytes ||
        builder.extent_count() >= 4096) {
      RETURN_IF_ERROR(SendBatch(builder.Take(), round));
    }
    return absl::OkStatus();
  };
  if (bitmap == nullptr) {
    for (const auto& region : memory.regions()) {
      const uint64_t first = region->gpa() / kPageSize;
      const uint64_t count = region->size() / kPageSize;
      for (uint64_t p = first; p < first + count; ++p) RETURN_IF_ERROR(add(p));
    }
  } else {
    for (size_t w = 0; w < bitmap->size(); ++w) {
      uint64_t bits = (*bitmap)[w];
      while (bits != 0) {
        const uint64_t page = w * 64 + std::countr_zero(bits);
        bits &= bits - 1;
        // Only backed pages can be dirty; a bit elsewhere would be a
        // back-end bug, and there is nothing to send for it.
        if (!memory.Translate(page * kPageSize, kPageSize).ok()) continue;
        RETURN_IF_ERROR(add(page));
      }
    }
  }
  return SendBatch(builder.Take(), round);
}

absl::Status SourceMigration::PreCopy() {
  uint32_t round = 1;
  {
    absl::MutexLock lock(&mu_);
    progress_.round = round;
    progress_.pages_remaining = vmm_->memory().end_gpa() / kPageSize;
  }
  absl::Time start = absl::Now();
  uint64_t bytes_before = 0;
  RETURN_IF_ERROR(SendPages(nullptr, 0, round));
  for (;;) {
    const absl::Duration took =
        std::max(absl::Now() - start, absl::Microseconds(1));
    uint64_t sent_bytes;
    {
      absl::MutexLock lock(&mu_);
      sent_bytes = progress_.page_bytes_sent - bytes_before;
    }
    std::vector<uint64_t> dirty;
    const uint64_t remaining = Harvest(&dirty);
    // Bandwidth: what the last round moved per second (at least 1 MB/s so
    // a round of zero pages does not predict infinite downtime).
    const double bandwidth =
        std::max(1e6, sent_bytes / absl::ToDoubleSeconds(took));
    const absl::Duration downtime =
        absl::Seconds(remaining * kPageSize / bandwidth);
    {
      absl::MutexLock lock(&mu_);
      progress_.pages_remaining = remaining;
      progress_.dirty_pages_per_second =
          remaining / absl::ToDoubleSeconds(took);
      progress_.bandwidth_bytes_per_second = bandwidth;
      progress_.expected_downtime = downtime;
    }
    Emit();
    RETURN_IF_ERROR(CheckCancel());
    // Also before Stop: a destination that gave up must not cost the guest
    // a pause.
    RETURN_IF_ERROR(CheckForAbort());
    if ((downtime <= options_.downtime_budget &&
         round >= options_.min_rounds) ||
        round >= options_.max_rounds) {
      pending_ = std::move(dirty);
      return absl::OkStatus();
    }
    ++round;
    {
      absl::MutexLock lock(&mu_);
      progress_.round = round;
      bytes_before = progress_.page_bytes_sent;
    }
    start = absl::Now();
    RETURN_IF_ERROR(SendPages(&dirty, kDirtySinceLastRound, round));
  }
}

absl::Status SourceMigration::Stop() {
  RETURN_IF_ERROR(vmm_->PauseGuest());
  guest_paused_ = true;
  paused_at_ = absl::Now();
  vhost::Frontend& f = vmm_->frontend();
  // QEMU's order (vhost_dev_stop): disable every ring, then stop each; the
  // GET_VRING_BASE reply comes after in-flight requests completed.
  if (features_ & vhost::kProtocolFeaturesMask) {
    for (const RingConfig& ring : rings_) {
      disabled_[ring.index] = true;
      RETURN_IF_ERROR(f.SetVringEnable(ring.index, false));
    }
  }
  for (const RingConfig& ring : rings_) {
    ASSIGN_OR_RETURN(const uint32_t base, f.GetVringBase(ring.index));
    if (base > 0xffff) {
      return absl::DataLossError(absl::StrCat("GET_VRING_BASE(", ring.index,
                                              "): ", base,
                                              " is not a split ring index"));
    }
    bases_[ring.index] = static_cast<uint16_t>(base);
  }
  return absl::OkStatus();
}

absl::Status SourceMigration::FinalSync() {
  const uint64_t n = Harvest(&pending_);
  {
    absl::MutexLock lock(&mu_);
    progress_.pages_remaining = n;
    progress_.round += 1;
  }
  RETURN_IF_ERROR(SendPages(&pending_, kDirtySinceLastRound, progress().round));
  DeviceStopped stopped;
  for (const RingConfig& ring : rings_) {
    RingDescription d;
    d.index = ring.index;
    d.size = ring.size;
    d.addr = ring.addr;
    d.addr.flags &= ~vhost::kVringAddrFlagLog;
    d.base = bases_.at(ring.index);
    stopped.rings.push_back(d);
  }
  ASSIGN_OR_RETURN(stopped.guest_state, vmm_->SaveGuestState());
  return transport_->Send(std::move(stopped), options_.message_timeout);
}

absl::Status SourceMigration::SaveState() {
  if (!device_state_) return absl::OkStatus();
  vhost::Frontend& f = vmm_->frontend();
  ASSIGN_OR_RETURN(auto ends, vhost::MakePipe());
  state_read_end_ = std::move(ends.first);
  // From here the back-end runs a save that CHECK_DEVICE_STATE must join,
  // even if we give up half way.
  state_check_pending_ = true;
  ASSIGN_OR_RETURN(UniqueFd theirs,
                   f.SetDeviceStateFd(vhost::TransferDirection::kSave,
                                      vhost::MigrationPhase::kStopped,
                                      std::move(ends.second)));
  if (theirs.valid()) state_read_end_ = std::move(theirs);
  const absl::Time deadline = absl::Now() + options_.state_timeout;
  std::string chunk(options_.state_chunk_bytes, '\0');
  uint64_t total = 0;
  for (;;) {
    ASSIGN_OR_RETURN(const size_t n,
                     vhost::ReadSome(state_read_end_.get(), chunk.data(),
                                     chunk.size(), deadline));
    if (n == 0) break;
    total += n;
    state_crc_ = Crc32cExtend(state_crc_, chunk.data(), n);
    RETURN_IF_ERROR(transport_->Send(DeviceStateChunk{chunk.substr(0, n)},
                                     options_.message_timeout));
    {
      absl::MutexLock lock(&mu_);
      progress_.state_bytes = total;
    }
    Emit();
    RETURN_IF_ERROR(CheckCancel());
    RETURN_IF_ERROR(CheckForAbort());
  }
  state_read_end_.reset();
  state_total_ = total;
  return absl::OkStatus();
}

absl::Status SourceMigration::Check() {
  if (device_state_) {
    state_check_pending_ = false;
    RETURN_IF_ERROR(vmm_->frontend().CheckDeviceState());
  }
  RETURN_IF_ERROR(transport_->Send(DeviceStateEnd{state_total_, state_crc_},
                                   options_.message_timeout));
  return AwaitReady();
}

absl::Status SourceMigration::AwaitReady() {
  const absl::Time deadline = absl::Now() + options_.ready_timeout;
  for (;;) {
    RETURN_IF_ERROR(CheckCancel());
    absl::StatusOr<MigrationMessage> m = transport_->Receive(kPollSlice);
    if (absl::IsDeadlineExceeded(m.status())) {
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("the destination was not ready within ",
                         absl::FormatDuration(options_.ready_timeout)));
      }
      continue;
    }
    if (!m.ok()) return m.status();
    if (std::holds_alternative<Ready>(*m)) return absl::OkStatus();
    if (const auto* abort = std::get_if<Abort>(&*m)) {
      abort_received_ = true;
      return absl::AbortedError(
          absl::StrCat("the destination gave up: ", abort->reason));
    }
    return absl::InternalError(
        absl::StrCat("expected Ready from the "
                     "destination, got ",
                     MessageName(*m)));
  }
}

absl::Status SourceMigration::Handover() {
  {
    absl::MutexLock lock(&mu_);
    if (cancel_requested_) {
      return absl::CancelledError("migration cancelled in Check");
    }
    // The point of no return: from now on Cancel() is refused and the
    // source never resumes.
    committed_ = true;
    progress_.phase = SourcePhase::kHandover;
  }
  Emit();
  absl::Status sent = transport_->Send(Commit{}, options_.message_timeout);
  if (!sent.ok()) {
    return absl::DataLossError(absl::StrCat(
        "Commit may not have reached the destination (", sent.ToString(),
        "); the source stays paused: resume it only once the destination is "
        "known not to run"));
  }
  return absl::OkStatus();
}

absl::Status SourceMigration::Restore() {
  vhost::Frontend& f = vmm_->frontend();
  absl::Status first = absl::OkStatus();
  auto keep = [&first](absl::Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  if (state_check_pending_) {
    // Closing our end makes a back-end that is still writing fail with
    // EPIPE; CHECK_DEVICE_STATE then waits for its save to finish. Its
    // verdict does not matter: the state is not used.
    state_read_end_.reset();
    (void)f.CheckDeviceState();
    state_check_pending_ = false;
  }
  // Restart stopped rings where they stopped: the base is the next avail
  // index the device would have consumed, so nothing is lost or run twice.
  absl::Status rings_restored = absl::OkStatus();
  for (const RingConfig& ring : rings_) {
    auto stopped = bases_.find(ring.index);
    absl::Status s = absl::OkStatus();
    if (stopped != bases_.end()) {
      s = StartRing(f, ring.size, ring.addr, stopped->second, ring.kick_fd,
                    ring.call_fd, /*log=*/ring_addrs_logged_);
    } else if (disabled_.count(ring.index)) {
      s = f.SetVringEnable(ring.index, true);
    }
    if (rings_restored.ok() && !s.ok()) rings_restored = s;
  }
  bases_.clear();
  disabled_.clear();
  if (guest_paused_ && !rings_restored.ok()) {
    // The device is lost (e.g. its back-end died): a resumed guest would
    // queue requests nobody serves. It stays paused; the VMM decides.
    keep(absl::Status(
        rings_restored.code(),
        absl::StrCat("the device's rings could not be restarted "
                     "(",
                     rings_restored.message(), "); the guest stays paused")));
  } else if (guest_paused_) {
    keep(vmm_->ResumeGuest());
    guest_paused_ = false;
  } else {
    keep(rings_restored);
  }
  if (log_all_set_) {
    // The Frontend re-enables its rings after this SET_FEATURES.
    keep(f.SetFeatures(features_));
    log_all_set_ = false;
  }
  if (ring_addrs_logged_) {
    for (const RingConfig& ring : rings_) {
      keep(SetRingAddr(f, ring.addr, /*log=*/false));
    }
    ring_addrs_logged_ = false;
  }
  return first;
}

}  // namespace vhostmig::migration
