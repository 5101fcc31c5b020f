// PassthroughFs, destination side of a migration: re-opening the inodes and
// handles a state stream installed (state_loader.h), verifying each against
// what the source recorded and confining it to the shared directory.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "fs_device/passthrough_fs.h"

namespace vhostmig::fs {
namespace {

constexpr size_t kMaxRecordedErrors = 64;

std::string Describe(const Inode& inode) {
  const MigratedLocation& m = *inode.migrated;
  std::string where;
  if (m.parent != 0) {
    absl::StrAppend(&where, "parent ", m.parent, ", name \"",
                    absl::CHexEscape(m.name), "\"");
  }
  if (m.handle) {
    absl::StrAppend(&where, where.empty() ? "" : ", ", "file handle of ",
                    m.handle->bytes.size(), " bytes");
  }
  if (where.empty()) where = "no location";
  return absl::StrCat("inode ", inode.node_id, " (", where, ")");
}

// Whether the file `st` describes is the one the source recorded.
bool SameFile(const Inode& pending, const struct statx& st, std::string* why) {
  const MigratedLocation& m = *pending.migrated;
  const InodeIdentity found = IdentityOf(st);
  if ((st.stx_mode & S_IFMT) != pending.type) {
    *why = absl::StrFormat(
        "file type changed (0%o recorded, 0%o found): the file was replaced",
        pending.type, st.stx_mode & S_IFMT);
    return false;
  }
  if (found.ino != m.identity.ino ||
      (m.identity_comparable && found.dev != m.identity.dev)) {
    *why = absl::StrCat("identity mismatch (dev ", m.identity.dev, " ino ",
                        m.identity.ino, " recorded, dev ", found.dev, " ino ",
                        found.ino,
                        " found): the file was replaced or renamed away");
    return false;
  }
  return true;
}

}  // namespace

void PassthroughFs::RecordMigrationError(std::string why) {
  absl::MutexLock lock(&errors_mu_);
  if (migration_errors_.size() == kMaxRecordedErrors) {
    migration_errors_.erase(migration_errors_.begin());
  }
  migration_errors_.push_back(std::move(why));
}

std::vector<std::string> PassthroughFs::MigrationErrors() const {
  absl::MutexLock lock(&errors_mu_);
  return migration_errors_;
}

bool PassthroughFs::InsideSharedDir(int fd) const {
  char buf[PATH_MAX];
  const ssize_t n = readlink(ProcFdPath(fd).c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return false;
  absl::string_view path(buf, static_cast<size_t>(n));
  // An unlinked file that something still holds open keeps its old name.
  absl::ConsumeSuffix(&path, " (deleted)");
  if (path == root_path_) return true;
  return absl::StartsWith(path, root_path_) &&
         path.size() > root_path_.size() &&
         (root_path_ == "/" || path[root_path_.size()] == '/');
}

int PassthroughFs::ReopenMigrated(const Inode& pending, const Inode* parent,
                                  Inode* out, std::string* why) {
  const MigratedLocation& m = *pending.migrated;
  // The parent's O_PATH fd and whether `name` in it is this very file.
  InodeFd parent_fd;
  bool have_parent = false;
  if (m.parent != 0 && parent != nullptr && parent->error == 0 &&
      !parent->migrated) {
    int err = 0;
    // Not PathFd: the parent is already resolved and resolve_mu_ is held.
    auto parent_inode = inodes_->Get(m.parent);
    if (parent_inode) parent_fd = RawPathFd(parent_inode, &err);
    have_parent = parent_inode && err == 0;
  }

  UniqueFd fd;
  std::string handle_why;
  if (m.handle) {
    UniqueFd by_handle;
    int err = mount_fds_.Open(*m.handle, O_PATH, &by_handle);
    if (err != 0) {
      handle_why =
          absl::StrCat("file handle does not open: ", std::strerror(err));
    } else {
      fd = std::move(by_handle);
    }
  }
  if (!fd.valid() && have_parent) {
    int err = OpenBeneath(parent_fd.get(), m.name, O_PATH, 0, &fd);
    if (err != 0) {
      *why = absl::StrCat(Describe(pending), ": ",
                          handle_why.empty() ? "" : handle_why + "; ",
                          "name does not open: ", std::strerror(err),
                          " (renamed away or deleted)");
      return err;
    }
  }
  if (!fd.valid()) {
    *why = absl::StrCat(Describe(pending), ": ",
                        !handle_why.empty() ? handle_why
                        : m.parent != 0
                            ? "its parent could not be re-opened"
                            : "the source could not locate it (e.g. unlinked "
                              "while open in find-paths mode)");
    return ENOENT;
  }

  struct statx st {};
  if (int err = Stat(fd.get(), &st); err != 0) {
    *why = absl::StrCat(Describe(pending), ": statx: ", std::strerror(err));
    return err;
  }
  std::string mismatch;
  if (!SameFile(pending, st, &mismatch)) {
    *why = absl::StrCat(Describe(pending), ": ", mismatch);
    return ESTALE;
  }
  if (m.handle) {
    // A handle names a file anywhere on its file system: accept it only if
    // its recorded name in its (confined) parent is this very file, or the
    // kernel's name for it lies inside the shared directory.
    bool inside = false;
    if (have_parent) {
      struct statx by_name {};
      const std::string n(m.name);
      inside = statx(parent_fd.get(), n.c_str(), AT_SYMLINK_NOFOLLOW,
                     STATX_BASIC_STATS | STATX_MNT_ID, &by_name) == 0 &&
               IdentityOf(by_name) == IdentityOf(st);
    }
    if (!inside) inside = InsideSharedDir(fd.get());
    if (!inside) {
      *why = absl::StrCat(Describe(pending),
                          ": file handle resolves outside the shared "
                          "directory");
      return EACCES;
    }
  }
  out->node_id = pending.node_id;
  if (int err = MakeInode(std::move(fd), st, out); err != 0) {
    *why = absl::StrCat(Describe(pending), ": ", std::strerror(err));
    return err;
  }
  return 0;
}

std::shared_ptr<const Inode> PassthroughFs::Resolve(
    std::shared_ptr<const Inode> inode) {
  if (!inode || !inode->migrated || inode->error != 0) return inode;
  absl::MutexLock lock(&resolve_mu_);
  // The unresolved ancestors, nearest first. The chain was checked for
  // cycles at load; the bound guards against anything that slipped by.
  std::vector<std::shared_ptr<const Inode>> chain;
  std::shared_ptr<const Inode> cur = inodes_->Get(inode->node_id);
  const size_t limit = inodes_->size() + 1;
  while (cur && cur->migrated && cur->error == 0 && chain.size() < limit) {
    chain.push_back(cur);
    if (cur->migrated->parent == 0) break;
    cur = inodes_->Get(cur->migrated->parent);
  }
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Inode& pending = **it;
    std::shared_ptr<const Inode> parent =
        pending.migrated->parent != 0 ? inodes_->Get(pending.migrated->parent)
                                      : nullptr;
    auto fresh = std::make_shared<Inode>();
    std::string why;
    int err = ReopenMigrated(pending, parent.get(), fresh.get(), &why);
    if (err != 0) {
      fresh = std::make_shared<Inode>();
      fresh->node_id = pending.node_id;
      fresh->identity = pending.identity;
      fresh->type = pending.type;
      fresh->migrated = pending.migrated;  // for messages
      fresh->error = EIO;
      RecordMigrationError(std::move(why));
    }
    inodes_->ReplaceInode(pending.node_id, *it, std::move(fresh));
  }
  return inodes_->Get(inode->node_id);
}

int PassthroughFs::ResolveFile(uint64_t fh, std::shared_ptr<OpenFile> file,
                               std::shared_ptr<OpenFile>* out) {
  if (file->error != 0) return file->error;
  if (!file->migrated) {
    *out = std::move(file);
    return 0;
  }
  auto fresh = std::make_shared<OpenFile>();
  fresh->node_id = file->node_id;
  fresh->flags = file->flags;
  fresh->is_dir = file->is_dir;
  auto inode = GetInode(file->node_id);
  int err = !inode ? ENOENT : inode->error;
  if (err == 0) {
    err =
        RawReopen(*inode, file->is_dir ? (O_RDONLY | O_DIRECTORY) : file->flags,
                  &fresh->fd);
    if (err != 0) {
      RecordMigrationError(
          absl::StrCat("handle ", fh, " on inode ", file->node_id,
                       ": re-open failed: ", std::strerror(err)));
    }
  } else {
    RecordMigrationError(absl::StrCat("handle ", fh, " on inode ",
                                      file->node_id,
                                      ": its inode could not be re-opened"));
  }
  if (err != 0) {
    fresh->fd.reset();
    fresh->error = EIO;
  }
  // Two requests may race here; whichever Replace lands first wins and the
  // other's fd closes with its OpenFile.
  auto now = handles_.Replace(fh, file, std::move(fresh));
  if (!now) return EBADF;  // released meanwhile
  if (now->error != 0) return now->error;
  *out = std::move(now);
  return 0;
}

absl::Status PassthroughFs::ReopenAllMigrated() {
  for (const auto& e : inodes_->Snapshot()) {
    if (!e.inode->migrated || e.inode->error != 0) continue;
    auto resolved = Resolve(e.inode);
    if (resolved && resolved->error != 0) {
      std::vector<std::string> errors = MigrationErrors();
      return absl::FailedPreconditionError(absl::StrCat(
          "--migration-on-error=abort: ",
          errors.empty() ? absl::StrCat("inode ", resolved->node_id,
                                        " could not be re-opened")
                         : errors.back()));
    }
  }
  for (auto& [fh, file] : handles_.Snapshot()) {
    std::shared_ptr<OpenFile> opened;
    if (ResolveFile(fh, file, &opened) != 0) {
      std::vector<std::string> errors = MigrationErrors();
      return absl::FailedPreconditionError(absl::StrCat(
          "--migration-on-error=abort: ",
          errors.empty()
              ? absl::StrCat("handle ", fh, " could not be re-opened")
              : errors.back()));
    }
  }
  return absl::OkStatus();
}

PassthroughFs::~PassthroughFs() {
  absl::MutexLock lock(&merge_mu_);
  StopMigrationMerge();
}

void PassthroughFs::StopMigrationMerge() {
  merge_stop_.store(true, std::memory_order_relaxed);
  if (merge_thread_.joinable()) merge_thread_.join();
  merge_stop_.store(false, std::memory_order_relaxed);
}

void PassthroughFs::StartMigrationMerge() {
  // Records per lock acquisition: a few hundred microseconds of work, so
  // ring threads that need the lock meanwhile wait little.
  constexpr size_t kBatch = 1024;
  absl::MutexLock lock(&merge_mu_);
  StopMigrationMerge();  // a previous load's: done, or its tables were reset
  merge_thread_ = std::thread([this] {
    bool inodes_done = false;
    bool handles_done = false;
    while (!(inodes_done && handles_done) &&
           !merge_stop_.load(std::memory_order_relaxed)) {
      if (!inodes_done) inodes_done = inodes_->MergeMigrated(kBatch);
      if (!handles_done) handles_done = handles_.MergeMigrated(kBatch);
      std::this_thread::yield();  // let waiting ring threads take the locks
    }
  });
}

void PassthroughFs::ResetMigrated() {
  {
    absl::MutexLock lock(&session_mu_);
    session_ = FuseSession{};
  }
  handles_.ResetToFresh();
  inodes_->ResetToFresh();
}

}  // namespace vhostmig::fs
