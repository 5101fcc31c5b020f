// FileHandle: a kernel file handle (name_to_handle_at) that names an inode
// without holding it open. With --inode-file-handles an inode table entry
// keeps one of these instead of an O_PATH fd, so the daemon's fd count does
// not grow with the number of inodes the guest has looked up.
//
// A handle is opened again with open_by_handle_at(), which needs an fd on the
// same mount (MountFds keeps one per mount id) and CAP_DAC_READ_SEARCH.
// Handles include the inode generation, so a handle never silently names a
// newer file that reused the inode number: opening a stale one fails ESTALE.
#ifndef VHOSTMIG_FS_DEVICE_FILE_HANDLE_H_
#define VHOSTMIG_FS_DEVICE_FILE_HANDLE_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "base/unique_fd.h"

namespace vhostmig::fs {

struct FileHandle {
  int type = 0;
  std::string bytes;  // f_handle, opaque
  uint64_t mount_id = 0;

  bool operator==(const FileHandle& o) const {
    return type == o.type && bytes == o.bytes && mount_id == o.mount_id;
  }

  // The handle of the file `fd` refers to (any fd, including O_PATH).
  // Returns 0 or the errno of name_to_handle_at (EOPNOTSUPP when the file
  // system does not export handles). Errors are errnos here because they
  // reach the guest as FUSE errors.
  static int FromFd(int fd, FileHandle* out);
};

// One fd per mount seen under the shared directory, the anchor that
// open_by_handle_at needs. Bounded by the number of mounts, not of inodes.
// Thread-safe. Entries are never removed, so an fd taken under the lock
// stays valid for the life of the object.
class MountFds {
 public:
  // Remembers directory `dir_fd` (any fd, O_PATH too) as the anchor of
  // mount `mount_id` unless one is already known. open_by_handle_at refuses
  // O_PATH anchors, so a real read-only fd of the directory is opened; the
  // caller keeps its own fd. Returns 0 or an errno.
  int Remember(uint64_t mount_id, int dir_fd);
  bool Knows(uint64_t mount_id) const;

  // open_by_handle_at(mount fd, handle, flags). Returns 0, ESTALE when the
  // mount was never seen or the file is gone, or open_by_handle_at's errno.
  int Open(const FileHandle& handle, int flags, UniqueFd* out) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, UniqueFd> fds_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_FILE_HANDLE_H_
