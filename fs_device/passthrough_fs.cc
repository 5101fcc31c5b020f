#include "fs_device/passthrough_fs.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"

namespace vhostmig::fs {
namespace {

constexpr unsigned kStatxMask = STATX_BASIC_STATS | STATX_MNT_ID;

}  // namespace

InodeIdentity IdentityOf(const struct statx& st) {
  return InodeIdentity{makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino,
                       st.stx_mnt_id};
}

int OpenBeneath(int dirfd, absl::string_view name, int flags, mode_t mode,
                UniqueFd* out) {
  // std::string for the terminating NUL; names are at most NAME_MAX.
  const std::string path(name);
  static std::atomic<bool> have_openat2{true};
  if (have_openat2.load(std::memory_order_relaxed)) {
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_NOFOLLOW | O_CLOEXEC);
    // openat2 refuses (EINVAL) mode bits outside the permissions, which
    // openat ignores; Linux's FUSE_CREATE sends S_IFREG in the mode.
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? (mode & 07777) : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long fd = syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how));
    if (fd >= 0) {
      out->reset(static_cast<int>(fd));
      return 0;
    }
    if (errno != ENOSYS) return errno;
    have_openat2.store(false, std::memory_order_relaxed);
  }
  // A single component with O_NOFOLLOW cannot leave `dirfd` either.
  int fd = openat(dirfd, path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return errno;
  out->reset(fd);
  return 0;
}

std::string ProcFdPath(int fd) { return absl::StrCat("/proc/self/fd/", fd); }

namespace internal {

int ReopenAsPathViaProc(int fd, UniqueFd* out) {
  const int path = open(ProcFdPath(fd).c_str(), O_PATH | O_CLOEXEC);
  if (path < 0) return errno;
  out->reset(path);
  return 0;
}

}  // namespace internal

int ReopenAsPath(int fd, UniqueFd* out) {
  // Without OPEN_TREE_CLONE, open_tree is open(path, O_PATH) of the path
  // `fd` was opened at, and needs no privilege; ENOSYS before Linux 5.2,
  // EPERM where a seccomp filter or LSM refuses it: then procfs for good.
  static std::atomic<bool> have_open_tree{true};
  if (have_open_tree.load(std::memory_order_relaxed)) {
    const long path =
        syscall(SYS_open_tree, fd, "", AT_EMPTY_PATH | OPEN_TREE_CLOEXEC);
    if (path >= 0) {
      out->reset(static_cast<int>(path));
      return 0;
    }
    if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) return errno;
    if (errno == ENOSYS || errno == EPERM) {
      have_open_tree.store(false, std::memory_order_relaxed);
    }
  }
  return internal::ReopenAsPathViaProc(fd, out);
}

ScopedFsCredentials::ScopedFsCredentials(uint32_t uid, uint32_t gid) {
  if (uid == 0 && gid == 0) return;  // the daemon's own credentials do
  // The daemon never changes its effective uid: one system call, not one
  // per request.
  static const bool daemon_is_root = geteuid() == 0;
  if (!daemon_is_root) return;
  // setfsgid first: once fsuid is not 0 the thread may lose CAP_SETGID's
  // effect on the file system side.
  old_gid_ = static_cast<uint32_t>(setfsgid(gid));
  old_uid_ = static_cast<uint32_t>(setfsuid(uid));
  active_ = true;
}

ScopedFsCredentials::~ScopedFsCredentials() {
  if (!active_) return;
  setfsuid(old_uid_);
  setfsgid(old_gid_);
}

absl::StatusOr<std::unique_ptr<PassthroughFs>> PassthroughFs::Create(
    const FsConfig& config) {
  int fd = open(config.shared_dir.c_str(),
                O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return LastErrnoStatus(
        absl::StrCat("open shared directory ", config.shared_dir));
  }
  UniqueFd root_fd(fd);
  struct statx st {};
  if (int err = Stat(root_fd.get(), &st); err != 0) {
    return ErrnoStatus("statx shared directory", err);
  }
  Inode root;
  root.identity = IdentityOf(st);
  root.type = st.stx_mode & S_IFMT;
  if (config.file_handles != FileHandleMode::kNever) {
    // Probe once so that --inode-file-handles=mandatory fails at start-up,
    // not on the guest's first lookup.
    FileHandle probe;
    int err = FileHandle::FromFd(root_fd.get(), &probe);
    if (err != 0 && config.file_handles == FileHandleMode::kMandatory) {
      return ErrnoStatus(
          "--inode-file-handles=mandatory: name_to_handle_at on the shared "
          "directory",
          err);
    }
  }
  char real[PATH_MAX];
  const ssize_t n =
      readlink(ProcFdPath(root_fd.get()).c_str(), real, sizeof(real) - 1);
  if (n <= 0) return LastErrnoStatus("readlink of the shared directory fd");
  root.path_fd = std::move(root_fd);
  umask(0);
  auto fs = std::unique_ptr<PassthroughFs>(
      new PassthroughFs(config, std::make_unique<InodeTable>(std::move(root))));
  fs->root_path_.assign(real, static_cast<size_t>(n));
  auto root_inode = fs->inodes_->Get(kRootNodeId);
  if (int err = fs->mount_fds_.Remember(root_inode->identity.mount_id,
                                        root_inode->path_fd.get());
      err != 0) {
    return ErrnoStatus("dup shared directory fd", err);
  }
  return fs;
}

FuseSession PassthroughFs::session() const {
  absl::MutexLock lock(&session_mu_);
  return session_;
}

void PassthroughFs::SetSession(const FuseSession& session) {
  absl::MutexLock lock(&session_mu_);
  session_ = session;
}

void PassthroughFs::Reset() {
  {
    absl::MutexLock lock(&session_mu_);
    session_ = FuseSession{};
  }
  handles_.Clear();
  inodes_->ClearExceptRoot();
}

uint64_t PassthroughFs::entry_timeout_sec() const {
  switch (config_.cache) {
    case CachePolicy::kNever:
      return 0;
    case CachePolicy::kAuto:
      return 1;
    case CachePolicy::kAlways:
      return 86400;
  }
  return 0;
}

uint64_t PassthroughFs::attr_timeout_sec() const { return entry_timeout_sec(); }

int PassthroughFs::CheckName(absl::string_view name) {
  if (name.empty()) return EINVAL;
  if (name.size() > NAME_MAX) return ENAMETOOLONG;
  // NUL cannot come from a FUSE request (names end at it) but can from a
  // state stream, where it would cut the name short in every syscall.
  if (name.find('/') != absl::string_view::npos ||
      name.find('\0') != absl::string_view::npos) {
    return EINVAL;
  }
  if (name == "." || name == "..") return EINVAL;
  return 0;
}

std::shared_ptr<const Inode> PassthroughFs::GetInode(uint64_t node_id) {
  return Resolve(inodes_->Get(node_id));
}

InodeFd PassthroughFs::PathFd(std::shared_ptr<const Inode> inode, int* err) {
  inode = Resolve(std::move(inode));
  if (!inode) {
    *err = ENOENT;
    return InodeFd();
  }
  return RawPathFd(std::move(inode), err);
}

InodeFd PassthroughFs::RawPathFd(std::shared_ptr<const Inode> inode,
                                 int* err) const {
  *err = inode->error;
  if (*err != 0) return InodeFd();
  if (inode->migrated) {
    *err = EIO;  // not re-opened: callers resolve first
    return InodeFd();
  }
  if (inode->path_fd.valid()) return InodeFd(std::move(inode), UniqueFd());
  UniqueFd fd;
  *err = mount_fds_.Open(*inode->handle, O_PATH, &fd);
  if (*err != 0) return InodeFd();
  return InodeFd(std::move(inode), std::move(fd));
}

int PassthroughFs::Stat(int fd, struct statx* out) {
  if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, kStatxMask, out) !=
      0) {
    return errno;
  }
  return 0;
}

int PassthroughFs::Register(UniqueFd path_fd,
                            const std::shared_ptr<const Inode>& parent,
                            absl::string_view name, LookupResult* out) {
  struct statx st {};
  if (int err = Stat(path_fd.get(), &st); err != 0) return err;
  Inode candidate;
  if (int err = MakeInode(std::move(path_fd), st, &candidate); err != 0) {
    return err;
  }
  Enter(std::move(candidate), st, parent, name, out);
  return 0;
}

int PassthroughFs::RegisterCreated(int file_fd,
                                   const std::shared_ptr<const Inode>& parent,
                                   absl::string_view name, LookupResult* out) {
  struct statx st {};
  if (int err = Stat(file_fd, &st); err != 0) return err;
  Inode candidate;
  if (int err = MakeInodeFrom(file_fd, UniqueFd(), st, &candidate); err != 0) {
    return err;
  }
  Enter(std::move(candidate), st, parent, name, out);
  return 0;
}

void PassthroughFs::Enter(Inode candidate, const struct statx& st,
                          const std::shared_ptr<const Inode>& parent,
                          absl::string_view name, LookupResult* out) {
  out->inode = inodes_->Ref(std::move(candidate),
                            InodeLocation{parent->node_id, std::string(name)});
  out->attr = st;
  out->submount = config_.announce_submounts && S_ISDIR(st.stx_mode) &&
                  st.stx_mnt_id != parent->identity.mount_id;
}

int PassthroughFs::MakeInode(UniqueFd path_fd, const struct statx& st,
                             Inode* out) {
  const int fd = path_fd.get();
  return MakeInodeFrom(fd, std::move(path_fd), st, out);
}

int PassthroughFs::MakeInodeFrom(int fd, UniqueFd path_fd,
                                 const struct statx& st, Inode* out) {
  Inode& candidate = *out;
  candidate.identity = IdentityOf(st);
  candidate.type = st.stx_mode & S_IFMT;
  if (config_.file_handles != FileHandleMode::kNever) {
    FileHandle handle;
    int err = FileHandle::FromFd(fd, &handle);
    if (err == 0 && S_ISDIR(st.stx_mode)) {
      // Every mount under the share is entered through its root directory,
      // so remembering directories gives each mount its anchor.
      err = mount_fds_.Remember(handle.mount_id, fd);
    }
    if (err == 0 && !mount_fds_.Knows(handle.mount_id)) err = ESTALE;
    if (err == 0) {
      // The point of file handles: no fd per inode.
      candidate.handle = std::move(handle);
      return 0;
    }
    if (config_.file_handles == FileHandleMode::kMandatory) return err;
  }
  if (!path_fd.valid()) {
    if (int err = ReopenAsPath(fd, &path_fd); err != 0) return err;
  }
  candidate.path_fd = std::move(path_fd);
  return 0;
}

int PassthroughFs::Lookup(const std::shared_ptr<const Inode>& parent,
                          absl::string_view name, LookupResult* out) {
  if (!parent->is_dir()) return ENOTDIR;
  int err = 0;
  InodeFd dir = PathFd(parent, &err);
  if (err != 0) return err;
  UniqueFd fd;
  err = OpenBeneath(dir.get(), name, O_PATH, 0, &fd);
  if (err != 0) return err;
  return Register(std::move(fd), parent, name, out);
}

int PassthroughFs::LookupDot(const std::shared_ptr<const Inode>& parent,
                             absl::string_view name, LookupResult* out) {
  if (!parent->is_dir()) return ENOTDIR;
  std::shared_ptr<const Inode> target;
  if (name == "." || parent->node_id == kRootNodeId) {
    target = parent;
  } else {
    // The directory's real parent, accepted only if the guest already holds
    // it: every such node was reached from the root by confined lookups.
    int err = 0;
    InodeFd dir = PathFd(parent, &err);
    if (err != 0) return err;
    struct statx st {};
    if (statx(dir.get(), "..", AT_SYMLINK_NOFOLLOW, kStatxMask, &st) != 0) {
      return errno;
    }
    auto node = inodes_->FindByIdentity(IdentityOf(st));
    if (!node) return EACCES;
    target = GetInode(*node);
    if (!target) return EACCES;
  }
  int err = 0;
  InodeFd fd = PathFd(target, &err);
  if (err != 0) return err;
  struct statx st {};
  if ((err = Stat(fd.get(), &st)) != 0) return err;
  // Take the lookup reference through the table so counts stay exact.
  Inode again;
  again.identity = target->identity;
  again.type = target->type;
  if (target->handle) again.handle = target->handle;
  auto info = inodes_->Info(target->node_id);
  out->inode =
      inodes_->Ref(std::move(again), info ? info->location : InodeLocation{});
  out->attr = st;
  return 0;
}

int PassthroughFs::Reopen(const Inode& inode, int flags, UniqueFd* out) {
  if (inode.migrated && inode.error == 0) {
    auto resolved = GetInode(inode.node_id);
    if (!resolved) return ENOENT;
    return RawReopen(*resolved, flags, out);
  }
  return RawReopen(inode, flags, out);
}

int PassthroughFs::RawReopen(const Inode& inode, int flags,
                             UniqueFd* out) const {
  if (inode.error != 0) return inode.error;
  if (inode.migrated) return EIO;  // not re-opened: callers resolve first
  flags = (flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY)) | O_CLOEXEC;
  if (S_ISLNK(inode.type)) return ELOOP;
  if (inode.handle) return mount_fds_.Open(*inode.handle, flags, out);
  int fd;
  if (inode.is_dir()) {
    fd = openat(inode.path_fd.get(), ".", flags | O_DIRECTORY);
  } else if (inode.is_regular()) {
    fd = open(ProcFdPath(inode.path_fd.get()).c_str(), flags);
  } else {
    // Devices, fifos and sockets are opened by the guest kernel itself.
    return ENXIO;
  }
  if (fd < 0) return errno;
  out->reset(fd);
  return 0;
}

void PassthroughFs::FillAttr(const struct statx& st, fuse_attr* out) const {
  *out = fuse_attr{};
  out->ino = st.stx_ino;
  out->size = st.stx_size;
  out->blocks = st.stx_blocks;
  out->atime = st.stx_atime.tv_sec;
  out->mtime = st.stx_mtime.tv_sec;
  out->ctime = st.stx_ctime.tv_sec;
  out->atimensec = st.stx_atime.tv_nsec;
  out->mtimensec = st.stx_mtime.tv_nsec;
  out->ctimensec = st.stx_ctime.tv_nsec;
  out->mode = st.stx_mode;
  out->nlink = st.stx_nlink;
  out->uid = st.stx_uid;
  out->gid = st.stx_gid;
  out->rdev = makedev(st.stx_rdev_major, st.stx_rdev_minor);
  out->blksize = st.stx_blksize;
}

void PassthroughFs::FillEntry(const LookupResult& r,
                              fuse_entry_out* out) const {
  *out = fuse_entry_out{};
  out->nodeid = r.inode->node_id;
  out->generation = 0;
  out->entry_valid = entry_timeout_sec();
  out->attr_valid = attr_timeout_sec();
  FillAttr(r.attr, &out->attr);
  if (r.submount) out->attr.flags |= FUSE_ATTR_SUBMOUNT;
}

uint32_t PassthroughFs::OpenReplyFlags(bool is_dir) const {
  switch (config_.cache) {
    case CachePolicy::kNever:
      return is_dir ? 0 : FOPEN_DIRECT_IO;
    case CachePolicy::kAuto:
      return 0;
    case CachePolicy::kAlways:
      return is_dir ? (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR) : FOPEN_KEEP_CACHE;
  }
  return 0;
}

std::shared_ptr<OpenFile> PassthroughFs::GetOpenFile(uint64_t fh,
                                                     uint64_t node_id,
                                                     bool want_dir) {
  std::shared_ptr<OpenFile> file;
  if (OpenFileFor(fh, node_id, want_dir, &file) != 0) return nullptr;
  return file;
}

int PassthroughFs::OpenFileFor(uint64_t fh, uint64_t node_id, bool want_dir,
                               std::shared_ptr<OpenFile>* out) {
  auto file = handles_.Get(fh);
  if (!file || file->node_id != node_id || file->is_dir != want_dir) {
    return EBADF;
  }
  return ResolveFile(fh, std::move(file), out);
}

int PassthroughFs::AnyOpenFileFor(uint64_t fh, uint64_t node_id,
                                  std::shared_ptr<OpenFile>* out) {
  auto file = handles_.Get(fh);
  if (!file || file->node_id != node_id) return EBADF;
  return ResolveFile(fh, std::move(file), out);
}

int PassthroughFs::AddOpenFile(const Inode& inode, UniqueFd fd, int flags,
                               bool is_dir, uint64_t* fh) {
  if (!inodes_->AddOpen(inode.node_id)) return ENOENT;
  auto file = std::make_shared<OpenFile>();
  file->fd = std::move(fd);
  file->node_id = inode.node_id;
  file->flags = flags & ~(O_CREAT | O_EXCL | O_TRUNC);
  file->is_dir = is_dir;
  *fh = handles_.Insert(std::move(file));
  return 0;
}

int PassthroughFs::ReleaseOpenFile(uint64_t fh, uint64_t node_id,
                                   bool want_dir) {
  // Not OpenFileFor: releasing a migrated handle must not re-open it, and
  // one that failed to re-open can still be released.
  auto existing = handles_.Get(fh);
  if (!existing || existing->node_id != node_id ||
      existing->is_dir != want_dir) {
    return EBADF;
  }
  auto file = handles_.Remove(fh);
  if (!file) return EBADF;  // a concurrent RELEASE of the same fh won
  inodes_->ReleaseOpen(file->node_id);
  return 0;
}

int PassthroughFs::root_fd() const {
  return inodes_->Get(kRootNodeId)->path_fd.get();
}

uint64_t PassthroughFs::root_mount_id() const {
  return inodes_->Get(kRootNodeId)->identity.mount_id;
}

}  // namespace vhostmig::fs
