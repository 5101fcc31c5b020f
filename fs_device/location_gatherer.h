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
// The pass then encodes the prepared records as the stream's chunks
// (StateWriter::EncodePrepared), with the lookup counts of its snapshot.
//
// Kept current: the inode table's change tracking (inode_table.h) records
// every entry created, removed, relocated or re-opened by the guest's
// LOOKUP, CREATE, RENAME, UNLINK... since Start, and which entries only had
// their lookup count changed; at the save, Collect hands over the prepared
// locations and chunks (sorted by node id, shared rather than copied) and
// those node ids: the writer copies every chunk none of them falls in and
// re-encodes the others, re-locating only the changed entries (the small
// delta). Changes made on the host behind the daemon's back are not seen
// here; the destination verifies identity on re-open and catches them.
//
// Thread-safety: Start/Cancel from the message thread, Collect from the
// state worker; all may race with each other and with ring workers. The
// background thread is joined by Cancel, Collect and the destructor.
#ifndef VHOSTMIG_FS_DEVICE_LOCATION_GATHERER_H_
#define VHOSTMIG_FS_DEVICE_LOCATION_GATHERER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fs_device/fs_config.h"
#include "fs_device/passthrough_fs.h"

namespace vhostmig::fs {

// The location part of one inode record, and which Inode object it was
// prepared for (a node id whose Inode object changed is re-examined).
struct PreparedLocation {
  std::shared_ptr<const Inode> inode;
  uint64_t node_id = 0;
  uint64_t lookups = 0;  // when prepared
  bool root = false;
  bool has_path = false;  // parent + name, verified
  uint64_t parent = 0;
  std::string name;
  std::optional<FileHandle> handle;
};

// Prepared records encoded as one stream frame (a StateChunk of inode
// columns): locations [previous chunk's end, end).
struct PreparedChunk {
  size_t end = 0;
  std::string frame;
  uint64_t unlocated = 0;  // records without any location
};

// What one background pass prepared, in ascending node-id order (`ids`
// mirrors `locations` for StatesOf). Immutable once published.
struct PreparedSet {
  std::vector<PreparedLocation> locations;
  std::vector<uint64_t> ids;
  std::vector<PreparedChunk> chunks;  // covering `locations` in order
};

// What the save gets: prepared locations, and what to re-examine.
struct GatheredLocations {
  std::shared_ptr<const PreparedSet> prepared;  // null: nothing gathered
  // Node ids created, removed, relocated or re-opened since Start,
  // ascending.
  std::vector<uint64_t> changed;
  // Node ids whose lookup count alone changed since Start, ascending.
  std::vector<uint64_t> recounted;
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
  // changes since Start (shared, no copy of the prepared set); tracking
  // continues and changes keep accumulating, so a failed save may be
  // retried. Without Start, returns "examine everything".
  GatheredLocations Collect();

  // Tests and benchmarks: waits until the background pass has finished;
  // false on timeout or when none runs.
  bool WaitForPass(absl::Duration timeout);

  // Fills the location of one table entry (syscalls). Used by the
  // background pass and by the writer for the delta.
  static void Locate(PassthroughFs& fs, MigrationMode mode,
                     const InodeTable::EntrySnapshot& entry,
                     PreparedLocation* out);

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
  std::shared_ptr<const PreparedSet> prepared_ ABSL_GUARDED_BY(mu_);
  bool pass_done_ ABSL_GUARDED_BY(mu_) = false;
  // Changes taken from the inode table since Start (Collect only).
  absl::flat_hash_set<uint64_t> changed_ ABSL_GUARDED_BY(thread_mu_);
  absl::flat_hash_set<uint64_t> recounted_ ABSL_GUARDED_BY(thread_mu_);
  bool all_changed_ ABSL_GUARDED_BY(thread_mu_) = false;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_LOCATION_GATHERER_H_
