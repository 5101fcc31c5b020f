// HandleTable: the FUSE file handles (fh) the guest holds, from OPEN,
// CREATE and OPENDIR until RELEASE/RELEASEDIR. Migration serializes it
// together with the inode table.
//
// An OpenFile owns the fd the guest's reads, writes and directory reads go
// to, the node id it was opened on and the open flags the guest asked for
// (without O_CREAT/O_EXCL/O_TRUNC, which only mean something once; this is
// what a destination re-opens with). OpenFiles are shared: a data transfer
// in flight keeps its fd open even if RELEASE races with it.
//
// Invariants:
//  * Every OpenFile's node id has one `opens` reference in the InodeTable,
//    taken before Insert and dropped by whoever Removes the handle.
//  * Handle ids are never reused during the table's life (0 is never
//    issued), so a stale fh from the guest fails with EBADF.
//  * A directory handle's stream position is the fd's own offset; READDIR
//    seeks it to the guest's offset under `dir_mu` before reading, so the
//    guest's offset is the whole stream state.
//
// Migration: a destination installs the source's handles whole, as a
// MigratedHandles (migrated_tables.h) the table consults on a miss: a
// handle becomes a *migrated* OpenFile (no fd yet) in the hash table when a
// request first names it, or by MergeMigrated in the background.
// PassthroughFs re-opens each on first use and swaps the result in with
// Replace.
//
// Thread-safe.
#ifndef VHOSTMIG_FS_DEVICE_HANDLE_TABLE_H_
#define VHOSTMIG_FS_DEVICE_HANDLE_TABLE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "base/unique_fd.h"

namespace vhostmig::fs {

struct MigratedHandles;  // migrated_tables.h

struct OpenFile {
  UniqueFd fd;
  uint64_t node_id = 0;
  int flags = 0;  // open(2) flags as requested, less O_CREAT|O_EXCL|O_TRUNC
  bool is_dir = false;
  // Destination only: the handle came from a migration stream and `fd` is
  // not open yet (PassthroughFs::OpenFileFor opens it).
  bool migrated = false;
  // Non-zero: a migrated handle that could not be re-opened
  // (--migration-on-error=guest-error); every use fails with this errno.
  int error = 0;
  // Serializes seek + getdents on a directory stream.
  absl::Mutex dir_mu;
  // What the data path learned about the host file system behind `fd` (a
  // hint, never migrated): +1 reads / writes can be tried without blocking
  // (RWF_NOWAIT), -1 they cannot (tmpfs; ext4's buffered writes), 0 not
  // known yet. See uring_data_path.h.
  std::atomic<int8_t> nowait_read{0};
  std::atomic<int8_t> nowait_write{0};
};

class HandleTable {
 public:
  HandleTable() = default;
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;

  // Registers `file` and returns its new handle id.
  uint64_t Insert(std::shared_ptr<OpenFile> file);

  // The open file behind `fh`, or nullptr.
  std::shared_ptr<OpenFile> Get(uint64_t fh) const;

  // Unregisters `fh` and returns what it held (nullptr if unknown). The fd
  // closes when the last user lets go of the OpenFile.
  std::shared_ptr<OpenFile> Remove(uint64_t fh);

  // Unregisters everything (DESTROY, reset) and returns the files so the
  // caller can drop their inode references.
  std::vector<std::shared_ptr<OpenFile>> Clear();

  size_t size() const;
  uint64_t next_fh() const;

  // --- Migration ---

  // Every handle, copied under the lock.
  std::vector<std::pair<uint64_t, std::shared_ptr<OpenFile>>> Snapshot() const;
  // Installs a load's handles into an empty table that never issued a
  // handle (FailedPrecondition otherwise), in O(1). The loader has checked
  // them: ascending unique fhs below `next_fh`.
  absl::Status InstallMigrated(std::shared_ptr<const MigratedHandles> files,
                               uint64_t next_fh);
  // Moves up to `max_files` more migrated handles into the hash table.
  // Returns true when nothing is left.
  bool MergeMigrated(size_t max_files);
  // Replaces `fh`'s file by `replacement` if it still is `expected`;
  // returns what the table holds for `fh` afterwards (nullptr if released).
  std::shared_ptr<OpenFile> Replace(uint64_t fh,
                                    const std::shared_ptr<OpenFile>& expected,
                                    std::shared_ptr<OpenFile> replacement);
  // Empty, handle ids restarting at 1 (a failed load).
  void ResetToFresh();

 private:
  struct Overlay {
    std::shared_ptr<const MigratedHandles> files;
    size_t size = 0;
    std::vector<uint64_t> promoted;  // bit per handle: in files_ (or gone)
    size_t unpromoted = 0;
    size_t merged = 0;  // handles [0, merged) are promoted
  };
  // The entry of `fh`, promoting a migrated handle; end() if none.
  using Map = absl::flat_hash_map<uint64_t, std::shared_ptr<OpenFile>>;
  Map::iterator FindLocked(uint64_t fh) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Map::iterator PromoteLocked(size_t i) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PromoteAllLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // Promotion fills files_ in const methods too (see InodeTable).
  mutable Map files_ ABSL_GUARDED_BY(mu_);
  mutable std::unique_ptr<Overlay> overlay_ ABSL_GUARDED_BY(mu_);
  uint64_t next_fh_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_HANDLE_TABLE_H_
