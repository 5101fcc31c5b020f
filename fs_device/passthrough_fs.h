// PassthroughFs: the shared directory as the FUSE handlers see it. It owns
// the inode and handle tables and the negotiated FUSE session, and provides
// the few primitives every handler family builds on: resolving one name
// under a directory, getting an fd for an inode, re-opening an inode for
// I/O, and filling FUSE attribute replies.
//
// Confinement: the daemon resolves exactly one path component at a time,
// relative to an fd it holds for a directory inside the shared directory,
// with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
// (openat(O_NOFOLLOW) on kernels without openat2). Names from the guest
// are single components: no '/', not empty, not "." or ".." (LOOKUP maps
// those to nodes the table already holds, so ".." at the root stays at the
// root). Symlinks are never followed on the guest's behalf: the guest
// kernel resolves them. Re-opening an inode for I/O goes through
// /proc/self/fd/N only for O_PATH fds of regular files, through
// openat(fd, ".") for directories, or through open_by_handle_at.
//
// Errors are errno values (positive ints) because they go to the guest
// verbatim in fuse_out_header.error; 0 means success.
//
// Migration destination: inodes and handles loaded from a state stream are
// installed at once as flat arrays (migrated_tables.h) that the tables
// consult on a miss and merge into their hash tables on first use or on a
// background thread (StartMigrationMerge), and re-opened lazily (GetInode,
// PathFd, Reopen and OpenFileFor do it on first use), each verified against
// the identity the source recorded and confined to the shared directory;
// see docs/state-format.md. What fails verification on first use answers EIO
// for just that inode or handle; the abort policy's checks happen in the
// loader (state_loader.h), without re-opening every file unless
// --migration-verify=load (ReopenAllMigrated).
//
// Thread-safe: handlers run concurrently on several ring threads.
#ifndef VHOSTMIG_FS_DEVICE_PASSTHROUGH_FS_H_
#define VHOSTMIG_FS_DEVICE_PASSTHROUGH_FS_H_

#include <linux/fuse.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "base/unique_fd.h"
#include "fs_device/file_handle.h"
#include "fs_device/fs_config.h"
#include "fs_device/handle_table.h"
#include "fs_device/inode_table.h"

namespace vhostmig::fs {

// What INIT negotiated. Recorded because a migration destination must
// serve the guest under the same options without a new INIT.
struct FuseSession {
  bool initialized = false;
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t flags = 0;  // negotiated, flags2 in the upper 32 bits
  uint32_t max_write = 0;
  uint32_t max_pages = 0;
  uint32_t max_readahead = 0;
};

// An fd for an inode, valid while this object lives: either the inode's own
// O_PATH fd (borrowed; the Inode is kept alive) or one opened from its
// file handle (owned, closed on destruction).
class InodeFd {
 public:
  InodeFd() = default;
  InodeFd(std::shared_ptr<const Inode> inode, UniqueFd owned)
      : inode_(std::move(inode)), owned_(std::move(owned)) {}
  int get() const {
    return owned_.valid() ? owned_.get() : inode_->path_fd.get();
  }

 private:
  std::shared_ptr<const Inode> inode_;
  UniqueFd owned_;
};

// The result of resolving a name: the inode (with one lookup reference
// taken) and its attributes.
struct LookupResult {
  std::shared_ptr<const Inode> inode;
  struct statx attr {};
  bool submount = false;
};

class PassthroughFs {
 public:
  // Opens the shared directory (which must be a directory) as node 1.
  // Sets the process umask to 0: the guest kernel already applied the
  // guest's umask to every mode it sends, the daemon must not apply a
  // second one.
  static absl::StatusOr<std::unique_ptr<PassthroughFs>> Create(
      const FsConfig& config);
  ~PassthroughFs();

  const FsConfig& config() const { return config_; }
  InodeTable& inodes() { return *inodes_; }
  HandleTable& handles() { return handles_; }

  FuseSession session() const;
  void SetSession(const FuseSession& session);
  // DESTROY or device reset: forgets the session and every inode and
  // handle but the root.
  void Reset();

  // Entry and attribute timeouts for the configured cache policy.
  uint64_t entry_timeout_sec() const;
  uint64_t attr_timeout_sec() const;

  // Validates a single name component from the guest: not empty, at most
  // NAME_MAX bytes (ENAMETOOLONG), no '/' or NUL, not "." or ".." (EINVAL).
  static int CheckName(absl::string_view name);

  // The inode of `node_id`, or nullptr (the caller replies ENOENT). A
  // migrated inode is re-opened first; if that failed, the returned inode
  // has `error` set and PathFd/Reopen fail with it.
  std::shared_ptr<const Inode> GetInode(uint64_t node_id);
  // An O_PATH fd for `inode` (errno in *err on failure, e.g. ESTALE, or
  // the inode's migration error).
  InodeFd PathFd(std::shared_ptr<const Inode> inode, int* err);

  // Resolves `name` (already checked) in directory `parent` and takes one
  // lookup reference on the result.
  int Lookup(const std::shared_ptr<const Inode>& parent, absl::string_view name,
             LookupResult* out);
  // Enters the file `path_fd` (an O_PATH fd the caller just opened as
  // `name` in `parent`) into the inode table, taking one lookup reference.
  int Register(UniqueFd path_fd, const std::shared_ptr<const Inode>& parent,
               absl::string_view name, LookupResult* out);
  // The same for the file CREATE just made as `name` in `parent`, given the
  // fd it opened for I/O (not taken). The inode gets exactly that file
  // (ReopenAsPath, or its file handle), never whatever the name points to
  // by now.
  int RegisterCreated(int file_fd, const std::shared_ptr<const Inode>& parent,
                      absl::string_view name, LookupResult* out);
  // LOOKUP of "." or ".." (the guest may send them with export support):
  // "." is `parent`; ".." is the parent's parent if the table already holds
  // it, the root at the root, refused (EACCES) otherwise.
  int LookupDot(const std::shared_ptr<const Inode>& parent,
                absl::string_view name, LookupResult* out);

  // Opens `inode` for I/O with `flags` (O_CLOEXEC added, O_NOFOLLOW and
  // O_CREAT/O_EXCL dropped).
  int Reopen(const Inode& inode, int flags, UniqueFd* out);

  // statx of an fd (AT_EMPTY_PATH, no symlink following).
  static int Stat(int fd, struct statx* out);

  // Reply structures.
  void FillAttr(const struct statx& st, fuse_attr* out) const;
  void FillEntry(const LookupResult& r, fuse_entry_out* out) const;
  // FOPEN_* flags for a newly opened file or directory.
  uint32_t OpenReplyFlags(bool is_dir) const;

  // The open file `fh` if it exists and was opened on `node_id` and is a
  // directory handle iff `want_dir`; nullptr otherwise (reply EBADF).
  std::shared_ptr<OpenFile> GetOpenFile(uint64_t fh, uint64_t node_id,
                                        bool want_dir);
  // The same with the errno to reply: EBADF for an unknown or mismatched
  // handle, the migration error (EIO) of a handle that failed to re-open.
  // A migrated handle is re-opened here on first use.
  int OpenFileFor(uint64_t fh, uint64_t node_id, bool want_dir,
                  std::shared_ptr<OpenFile>* out);
  // As OpenFileFor, for requests that accept file and directory handles
  // alike (GETATTR, SETATTR with a handle).
  int AnyOpenFileFor(uint64_t fh, uint64_t node_id,
                     std::shared_ptr<OpenFile>* out);

  // Registers an open fd for `inode`; the inode gains an open reference.
  // Returns 0 and the new fh, or ENOENT if the inode was forgotten meanwhile.
  int AddOpenFile(const Inode& inode, UniqueFd fd, int flags, bool is_dir,
                  uint64_t* fh);
  // RELEASE/RELEASEDIR.
  int ReleaseOpenFile(uint64_t fh, uint64_t node_id, bool want_dir);

  // The shared directory's root fd (O_PATH).
  int root_fd() const;
  // The root's path as the kernel names it (/proc/self/fd of the root fd).
  const std::string& root_path() const { return root_path_; }
  // The mount id of the shared directory.
  uint64_t root_mount_id() const;

  // --- Migration (destination side; passthrough_fs_migrated.cc) ---

  // Re-opens every migrated inode and handle now. Returns the first failure
  // (with a message naming the record); the caller decides (abort policy:
  // the load fails and ResetMigrated empties the tables).
  absl::Status ReopenAllMigrated();
  // Empties the tables and forgets the session after a failed load.
  void ResetMigrated();
  // Merges what a load installed into the tables' hash tables on a
  // background thread, a batch at a time under each table's lock (a load's
  // last step). Requests need not wait for it: each promotes what it uses.
  void StartMigrationMerge();
  // Why migrated inodes or handles failed (most recent last, at most 64).
  std::vector<std::string> MigrationErrors() const;

 private:
  PassthroughFs(const FsConfig& config, std::unique_ptr<InodeTable> inodes)
      : config_(config), inodes_(std::move(inodes)) {}

  // Turns an O_PATH fd of a file into an Inode (identity, type and, in
  // file-handle mode, a handle instead of the fd).
  int MakeInode(UniqueFd path_fd, const struct statx& st, Inode* out);
  // The same from any fd of the file (`fd`, not taken) and, if the caller
  // has one, its O_PATH fd; without one, an O_PATH fd is made from `fd`
  // only if the inode needs it (no file handle).
  int MakeInodeFrom(int fd, UniqueFd path_fd, const struct statx& st,
                    Inode* out);
  // Register's second half: the table entry for `candidate`.
  void Enter(Inode candidate, const struct statx& st,
             const std::shared_ptr<const Inode>& parent, absl::string_view name,
             LookupResult* out);
  // PathFd/Reopen for an inode that is not migrated (or failed).
  InodeFd RawPathFd(std::shared_ptr<const Inode> inode, int* err) const;
  int RawReopen(const Inode& inode, int flags, UniqueFd* out) const;

  // Re-opens `inode` if it is migrated (and its migrated ancestors first);
  // returns what the table holds now (nullptr if forgotten meanwhile).
  std::shared_ptr<const Inode> Resolve(std::shared_ptr<const Inode> inode);
  // Finds the file one migrated inode names, given its resolved parent (or
  // nullptr) and verifies it. 0 and *out, or an errno and *why.
  int ReopenMigrated(const Inode& pending, const Inode* parent, Inode* out,
                     std::string* why);
  // Whether the open file `fd` lies inside the shared directory (through
  // the kernel's name for it).
  bool InsideSharedDir(int fd) const;
  int ResolveFile(uint64_t fh, std::shared_ptr<OpenFile> file,
                  std::shared_ptr<OpenFile>* out);
  void RecordMigrationError(std::string why);
  void StopMigrationMerge() ABSL_EXCLUSIVE_LOCKS_REQUIRED(merge_mu_);

  const FsConfig config_;
  std::unique_ptr<InodeTable> inodes_;
  HandleTable handles_;
  MountFds mount_fds_;
  mutable absl::Mutex session_mu_;
  FuseSession session_ ABSL_GUARDED_BY(session_mu_);
  std::string root_path_;
  // Serializes re-opening migrated inodes, so each is opened once and a
  // chain of ancestors is resolved top-down exactly once.
  absl::Mutex resolve_mu_;
  mutable absl::Mutex errors_mu_;
  std::vector<std::string> migration_errors_ ABSL_GUARDED_BY(errors_mu_);
  absl::Mutex merge_mu_;
  std::thread merge_thread_ ABSL_GUARDED_BY(merge_mu_);
  std::atomic<bool> merge_stop_{false};
};

// The table identity of the file `st` describes (st must include
// STATX_MNT_ID).
InodeIdentity IdentityOf(const struct statx& st);

// Opens one name component under `dirfd` without leaving it and without
// following symlinks (see the file comment).
int OpenBeneath(int dirfd, absl::string_view name, int flags, mode_t mode,
                UniqueFd* out);

// "/proc/self/fd/N": the only way to reach xattrs and some metadata of a
// file the daemon holds only as O_PATH.
std::string ProcFdPath(int fd);

// A new O_PATH fd (close-on-exec) for exactly the file `fd` refers to, any
// kind of fd: the same dentry and mount, with no name resolved again, so a
// file renamed onto the name meanwhile cannot be substituted. One
// open_tree(fd, "", AT_EMPTY_PATH) (Linux 5.2+; a few hundred ns) where
// the kernel allows it, else the /proc/self/fd/N magic link (a procfs path
// walk, several times that). 0 or an errno.
int ReopenAsPath(int fd, UniqueFd* out);

namespace internal {
// ReopenAsPath's fallback, for tests: through /proc/self/fd/N.
int ReopenAsPathViaProc(int fd, UniqueFd* out);
}  // namespace internal

// Switches this thread's filesystem uid/gid to the requester's while
// creating files, so new files are owned as on a local file system
// (setfsuid/setfsgid are per thread). A no-op when the daemon is not root.
class ScopedFsCredentials {
 public:
  ScopedFsCredentials(uint32_t uid, uint32_t gid);
  ~ScopedFsCredentials();
  ScopedFsCredentials(const ScopedFsCredentials&) = delete;
  ScopedFsCredentials& operator=(const ScopedFsCredentials&) = delete;

 private:
  bool active_ = false;
  uint32_t old_uid_ = 0;
  uint32_t old_gid_ = 0;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_PASSTHROUGH_FS_H_
