// LocationGatherer: the migration source's background work. From the moment
// dirty logging starts (OnLogAllChanged(true)) until the save, it finds out
// how the destination will find each inode again, while the guest still
// runs, so the stopped phase only writes prepared records:
//
//  * find-paths: verifies that each inode's recorded (parent node, name)
//    still names it (statx of the name under the parent's fd, compared with
//    the inode's identity). Inodes it cannot verify get no location.
//  * file-handles: obtains a name_to_handle_at handle per inode (reusing the
//    handle the table already holds in --inode-file-handles mode), plus the
//    verified path as a hint.
//
// Kept current: the inode table's change tracking (inode_table.h) records
// every entry created, removed or relocated by the guest's LOOKUP, CREATE,
// RENAME, UNLINK... since Start; at the save, Collect hands over the
// prepared locations and the set of changed node ids, which the writer
// re-examines (the small delta). Changes made on the host behind the
// daemon's back are not seen here; the destination verifies identity on
// re-open and catches them.
//
// Thread-safety: Start/Cancel from the message thread, Collect from the
// state worker; all may race with each other and with ring workers. The
// background thread is joined by Cancel, Collect and the destructor.
#ifndef VHOSTMIG_FS_DEVICE_LOCATION_GATHERER_H_
#define VHOSTMIG_FS_DEVICE_LOCATION_GATHERER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fs_device/fs_config.h"
#include "fs_device/passthrough_fs.h"
#include "proto/fs_state.pb.h"

namespace vhostmig::fs {

// The location part of one inode record, and which Inode object it was
// prepared for (a node id whose Inode object changed is re-examined).
struct PreparedLocation {
  std::shared_ptr<const Inode> inode;
  fs_state::v1::InodeRecord record;  // root / path / file_handle only
};

// What the save gets: prepared locations, and what to re-examine.
struct GatheredLocations {
  absl::flat_hash_map<uint64_t, PreparedLocation> prepared;
  absl::flat_hash_set<uint64_t> changed;
  bool all_changed = true;  // nothing gathered (no LOG_ALL): examine all
};

class LocationGatherer {
 public:
  LocationGatherer(PassthroughFs* fs, MigrationMode mode);
  ~LocationGatherer();
  LocationGatherer(const LocationGatherer&) = delete;
  LocationGatherer& operator=(const LocationGatherer&) = delete;

  // Starts tracking changes and a background pass over the inode table.
  // A gathering already running is discarded and restarted.
  void Start();
  // Stops the background pass and discards everything (LOG_ALL cleared:
  // the migration was cancelled, or it is over).
  void Cancel();
  // Waits for the background pass, then returns what it prepared and the
  // changes since Start; tracking continues (a failed save may be retried).
  // Without Start, returns "examine everything".
  GatheredLocations Collect();

  // Tests and benchmarks: waits until the background pass has finished;
  // false on timeout or when none runs.
  bool WaitForPass(absl::Duration timeout);

  // Fills the location fields of `record` for one table entry (syscalls).
  // Used by the background pass and by the writer for the delta.
  static void Locate(PassthroughFs& fs, MigrationMode mode,
                     const InodeTable::EntrySnapshot& entry,
                     fs_state::v1::InodeRecord* record);

 private:
  void Pass(std::vector<InodeTable::EntrySnapshot> entries);
  void StopThread();

  PassthroughFs* const fs_;
  const MigrationMode mode_;
  absl::Mutex thread_mu_;  // Start/Cancel/Collect against each other
  std::thread thread_ ABSL_GUARDED_BY(thread_mu_);
  std::atomic<bool> cancel_{false};
  bool started_ ABSL_GUARDED_BY(thread_mu_) = false;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, PreparedLocation> prepared_
      ABSL_GUARDED_BY(mu_);
  bool pass_done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_LOCATION_GATHERER_H_
