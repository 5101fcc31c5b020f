// DestinationMigration: the destination side of a live migration
// (vhost-user.rst, "Migrating back-end state"; docs/migration.md):
//
//   Prepare → ReceivePages → LoadState → Check → Start
//
//   Prepare       Hello: the memory layout must match the VMM's, the
//                 back-end must offer the source's features, and
//                 DEVICE_STATE when state follows.
//   ReceivePages  page extents into guest memory (each extent's digest is
//                 checked, then its flags against what arrived before),
//                 until the source's DeviceStopped (ring bases, guest
//                 state). A damaged extent fails the migration (DataLoss
//                 naming the round, the extent and its pages).
//   LoadState     SET_DEVICE_STATE_FD(load, stopped) *before* SET_FEATURES
//                 and SET_MEM_TABLE (QEMU's order); every chunk is written
//                 into the pipe as it arrives; EOF at the source's end.
//   Check         CHECK_DEVICE_STATE; every guest page received; then
//                 SET_FEATURES (the source's), SET_MEM_TABLE, and the VMM
//                 rebuilds its guest from memory; Ready to the source.
//   Start         only on the source's Commit: each ring started at the
//                 source's base (NUM, BASE, ADDR, CALL, KICK, ENABLE; the
//                 back-end processes it once without a kick), then the guest
//                 resumes.
//
// Before Commit any failure, Cancel() or the source's Abort tears the
// destination down (DestinationVmm::Teardown) and tells the source, which
// resumes. After Commit there is no going back: a failure to start is
// reported but nothing is torn down.
//
// Thread-safety: Run on one thread; Cancel and progress() from any thread.
#ifndef VHOSTMIG_MIGRATION_DESTINATION_MIGRATION_H_
#define VHOSTMIG_MIGRATION_DESTINATION_MIGRATION_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/memory_transport.h"
#include "migration/messages.h"
#include "migration/progress.h"
#include "migration/vmm.h"

namespace vhostmig::migration {

struct DestinationOptions {
  // Bound on the wait for each message from the source (pre-copy rounds
  // included) and on sending to it.
  absl::Duration message_timeout = absl::Seconds(30);
  // Bound on writing the device state into the back-end's pipe.
  absl::Duration state_timeout = absl::Seconds(30);
  DestinationObserver observer;
};

class DestinationMigration {
 public:
  // `vmm` and `transport` must outlive the migration.
  DestinationMigration(DestinationVmm* vmm, MemoryTransport* transport,
                       DestinationOptions options = {});
  DestinationMigration(const DestinationMigration&) = delete;
  DestinationMigration& operator=(const DestinationMigration&) = delete;

  // OK: the guest runs here. Aborted: the source gave up (torn down).
  // Cancelled: Cancel() (torn down). Other: the failing step (torn down
  // unless Commit had arrived).
  absl::Status Run();
  // Takes effect at the next step; false after Commit.
  bool Cancel();
  DestinationProgress progress() const;

 private:
  absl::Status RunPhases();
  absl::Status Prepare();
  absl::Status ReceivePages();
  absl::Status LoadState();
  absl::Status Check();
  absl::Status Start();
  absl::StatusOr<MigrationMessage> Next();
  absl::Status CheckCancel() const;
  void Enter(DestinationPhase phase);
  void Emit();

  DestinationVmm* const vmm_;
  MemoryTransport* const transport_;
  const DestinationOptions options_;

  mutable absl::Mutex mu_;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool committed_ ABSL_GUARDED_BY(mu_) = false;
  DestinationProgress progress_ ABSL_GUARDED_BY(mu_);

  Hello hello_;
  DeviceStopped stopped_;
  std::vector<uint64_t> received_;  // one bit per page
  bool abort_received_ = false;
};

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_DESTINATION_MIGRATION_H_
