// SourceMigration: the source side of a live migration of a guest and its
// vhost-user device (vhost-user.rst, "Migration" and "Migrating back-end
// state"; QEMU's order, docs/migration.md):
//
//   Setup → LogStart → PreCopy(n) → Stop → FinalSync → SaveState → Check
//         → Handover
//
//   Setup      capability check before anything moves: VHOST_F_LOG_ALL and
//              LOG_SHMFD always, DEVICE_STATE when the device has internal
//              state (SourceOptions::require_device_state). A back-end that
//              lacks one is refused with a FailedPrecondition naming it;
//              then Hello.
//   LogStart   SET_LOG_BASE (a log sized for guest memory) →
//              SET_FEATURES(+LOG_ALL) (the Frontend re-enables the rings it
//              enabled, for back-ends that disable them there) →
//              SET_VRING_ADDR with VHOST_VRING_F_LOG on every ring.
//   PreCopy    round 1 sends every page; each later round fetches-and-clears
//              the back-end's log OR the guest's own dirty pages and resends
//              them, until the dirty set would take at most the downtime
//              budget at the measured bandwidth (and min_rounds ran), or
//              max_rounds ran.
//   Stop       pause the guest, SET_VRING_ENABLE(0) on every ring, then
//              GET_VRING_BASE on each (in-flight requests complete first).
//   FinalSync  last harvest, last pages, ring bases and the guest state.
//   SaveState  SET_DEVICE_STATE_FD(save, stopped) with a pipe; the read end
//              is streamed in chunks to the destination as it arrives.
//   Check      CHECK_DEVICE_STATE, then wait for the destination's Ready.
//   Handover   Commit: from here the source never runs again.
//
// Cancel (Cancel(), an Abort from the destination, or any failure before
// Handover) restores the running source: rings that were stopped are
// started again at the bases GET_VRING_BASE returned (so no request is lost
// or run twice), the guest resumes, LOG_ALL is cleared (a back-end may take
// that as "migration cancelled") with the rings re-enabled, and ring
// addresses lose the LOG flag. The destination is told with Abort. If a
// stopped ring cannot be restarted (the device is lost), the guest stays
// paused and Run's error says so.
//
// Never both running: the destination starts on Commit only. If sending
// Commit fails, the source cannot know whether it arrived, so it stays
// paused and Run says so.
//
// Thread-safety: Run on one thread; Cancel and progress() from any thread
// (including the observer callback).
#ifndef VHOSTMIG_MIGRATION_SOURCE_MIGRATION_H_
#define VHOSTMIG_MIGRATION_SOURCE_MIGRATION_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
#include "migration/memory_transport.h"
#include "migration/progress.h"
#include "migration/vmm.h"
#include "vhost/memory/dirty_log.h"

namespace vhostmig::migration {

struct SourceOptions {
  // Converge when the remaining dirty pages fit this at the bandwidth
  // measured in the last round.
  absl::Duration downtime_budget = absl::Milliseconds(300);
  uint32_t min_rounds = 1;
  uint32_t max_rounds = 30;
  // The device keeps internal state (virtio-fs: its inode and handle
  // tables): refuse back-ends without DEVICE_STATE. When false, a
  // back-end's state is still transferred if it offers DEVICE_STATE.
  bool require_device_state = true;
  // Pages per data extent, data bytes per PageBatch, bytes per state chunk.
  uint32_t max_extent_pages = 64;
  uint64_t batch_bytes = 1ull << 20;
  uint32_t state_chunk_bytes = 64 << 10;
  // Bound on each transport send, on waiting for the destination's Ready,
  // and on the whole device-state read.
  absl::Duration message_timeout = absl::Seconds(10);
  absl::Duration ready_timeout = absl::Seconds(60);
  absl::Duration state_timeout = absl::Seconds(30);
  SourceObserver observer;
};

class SourceMigration {
 public:
  // `vmm` and `transport` must outlive the migration.
  SourceMigration(SourceVmm* vmm, MemoryTransport* transport,
                  SourceOptions options = {});
  ~SourceMigration();
  SourceMigration(const SourceMigration&) = delete;
  SourceMigration& operator=(const SourceMigration&) = delete;

  // Runs the migration. OK: handed over (the source stays paused, its rings
  // stopped). Cancelled: Cancel() was called; the source runs again.
  // Aborted: the destination gave up; the source runs again. Other errors:
  // the step that failed, after restoring the source (a restore failure is
  // appended). After a failed Commit delivery: DataLoss, source paused.
  absl::Status Run();

  // Requests cancellation; takes effect at the next step. False when too
  // late (Commit was sent).
  bool Cancel();

  bool committed() const;
  SourceProgress progress() const;
  // The ring bases GET_VRING_BASE returned (valid after Stop).
  std::map<uint32_t, uint16_t> ring_bases() const { return bases_; }

 private:
  absl::Status RunPhases();
  absl::Status Setup();
  absl::Status LogStart();
  absl::Status PreCopy();
  absl::Status Stop();
  absl::Status FinalSync();
  absl::Status SaveState();
  absl::Status Check();
  absl::Status AwaitReady();
  absl::Status Handover();
  // Puts the source back to running (see the class comment).
  absl::Status Restore();

  absl::Status CheckCancel() const;
  // Aborted when the destination has given up (an Abort is waiting), so
  // the source stops at the next page batch or state chunk rather than
  // sending on until it waits for Ready.
  absl::Status CheckForAbort();
  void Enter(SourcePhase phase);
  void Emit();
  // Harvests the back-end's log and the guest's dirty pages into `bitmap`.
  uint64_t Harvest(std::vector<uint64_t>* bitmap);
  // Sends the pages whose bits are set (or every page with all_pages).
  absl::Status SendPages(const std::vector<uint64_t>* bitmap, uint32_t flags,
                         uint32_t round);
  absl::Status SendBatch(std::vector<PageExtent> extents, uint32_t round);

  SourceVmm* const vmm_;
  MemoryTransport* const transport_;
  const SourceOptions options_;

  mutable absl::Mutex mu_;
  bool cancel_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool committed_ ABSL_GUARDED_BY(mu_) = false;
  SourceProgress progress_ ABSL_GUARDED_BY(mu_);

  // What has been done to the source, so Restore undoes exactly that.
  std::vector<RingConfig> rings_;
  uint64_t features_ = 0;  // acked, without LOG_ALL
  bool device_state_ = false;
  std::shared_ptr<vhost::DirtyLog> log_;
  bool log_all_set_ = false;
  bool ring_addrs_logged_ = false;
  bool guest_paused_ = false;
  std::map<uint32_t, bool> disabled_;   // rings given ENABLE(0)
  std::map<uint32_t, uint16_t> bases_;  // rings stopped, at base
  UniqueFd state_read_end_;
  bool state_check_pending_ = false;
  uint64_t state_total_ = 0;
  uint32_t state_crc_ = 0;         // CRC-32C of the state bytes sent so far
  std::vector<uint64_t> pending_;  // dirty pages left for the final round
  absl::Time paused_at_;
  bool hello_sent_ = false;
  bool abort_received_ = false;
};

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_SOURCE_MIGRATION_H_
