// FUSE entry requests: name lookup, reference drops, and everything that
// creates, links, removes or renames a directory entry.
#include <fcntl.h>
#include <linux/limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <string>

#include "fs_device/fuse_ops.h"

namespace vhostmig::fs {

int ReadName(FuseRequest& req, absl::string_view* name) {
  if (!req.args().ReadCString(name)) return EINVAL;
  return PassthroughFs::CheckName(*name);
}

int ReadLastName(FuseRequest& req, absl::string_view* name) {
  if (int err = ReadName(req, name); err != 0) return err;
  // The kernel sends exactly name + NUL; trailing bytes mean a name with an
  // embedded NUL or a confused driver.
  return req.args().remaining() == 0 ? 0 : EINVAL;
}

namespace {

ReplyResult ReplyEntry(PassthroughFs& fs, FuseRequest& req,
                       const LookupResult& r) {
  fuse_entry_out out;
  fs.FillEntry(r, &out);
  ReplyResult result = req.OkStruct(out);
  if (result.written < sizeof(fuse_out_header) + sizeof(out)) {
    // The guest never learned the node id: give the reference back.
    fs.inodes().Forget(r.inode->node_id, 1);
  }
  return result;
}

// The parent directory of an entry request, or an errno.
int GetDir(PassthroughFs& fs, uint64_t node_id,
           std::shared_ptr<const Inode>* dir, InodeFd* fd) {
  *dir = fs.GetInode(node_id);
  if (!*dir) return ENOENT;
  if (!(*dir)->is_dir()) return ENOTDIR;
  int err = 0;
  *fd = fs.PathFd(*dir, &err);
  return err;
}

// The node the table holds for `name` in `dirfd`, if any (for location
// bookkeeping around unlink and rename).
std::optional<uint64_t> KnownNode(PassthroughFs& fs, int dirfd,
                                  absl::string_view name) {
  struct statx st {};
  const std::string n(name);
  if (statx(dirfd, n.c_str(), AT_SYMLINK_NOFOLLOW,
            STATX_BASIC_STATS | STATX_MNT_ID, &st) != 0) {
    return std::nullopt;
  }
  return fs.inodes().FindByIdentity(IdentityOf(st));
}

// Clears `node`'s location if it still says (parent, name).
void ForgetLocation(PassthroughFs& fs, std::optional<uint64_t> node,
                    uint64_t parent, absl::string_view name) {
  if (!node) return;
  auto info = fs.inodes().Info(*node);
  if (info && info->location.parent == parent && info->location.name == name) {
    fs.inodes().SetLocation(*node, InodeLocation{});
  }
}

// Creates something with `make(dirfd, name)` as the requester, then looks
// it up and replies with its entry.
template <typename Make>
ReplyResult CreateEntry(PassthroughFs& fs, FuseRequest& req,
                        absl::string_view name, Make make) {
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<const Inode> dir;
  InodeFd dirfd;
  if (int err = GetDir(fs, req.nodeid(), &dir, &dirfd); err != 0) {
    return req.Error(err);
  }
  const std::string n(name);
  {
    ScopedFsCredentials creds(req.header().uid, req.header().gid);
    if (make(dirfd.get(), n.c_str()) != 0) return req.Error(errno);
  }
  LookupResult r;
  if (int err = fs.Lookup(dir, name, &r); err != 0) return req.Error(err);
  return ReplyEntry(fs, req, r);
}

}  // namespace

ReplyResult HandleLookup(PassthroughFs& fs, FuseRequest& req) {
  absl::string_view name;
  if (!req.args().ReadCString(&name) || req.args().remaining() != 0) {
    return req.Error(EINVAL);
  }
  auto dir = fs.GetInode(req.nodeid());
  if (!dir) return req.Error(ENOENT);
  LookupResult r;
  int err;
  if (name == "." || name == "..") {
    err = fs.LookupDot(dir, name, &r);
  } else {
    err = PassthroughFs::CheckName(name);
    if (err == 0) err = fs.Lookup(dir, name, &r);
  }
  if (err != 0) return req.Error(err);
  return ReplyEntry(fs, req, r);
}

ReplyResult HandleForget(PassthroughFs& fs, FuseRequest& req) {
  fuse_forget_in in{};
  if (req.args().Read(&in)) fs.inodes().Forget(req.nodeid(), in.nlookup);
  return req.NoReply();
}

ReplyResult HandleBatchForget(PassthroughFs& fs, FuseRequest& req) {
  fuse_batch_forget_in in{};
  if (!req.args().Read(&in)) return req.NoReply();
  // Only entries actually present count, whatever `count` claims.
  for (uint32_t i = 0; i < in.count; ++i) {
    fuse_forget_one one{};
    if (!req.args().Read(&one)) break;
    fs.inodes().Forget(one.nodeid, one.nlookup);
  }
  return req.NoReply();
}

ReplyResult HandleMknod(PassthroughFs& fs, FuseRequest& req) {
  fuse_mknod_in in{};
  absl::string_view name;
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (int err = ReadLastName(req, &name); err != 0) return req.Error(err);
  return CreateEntry(fs, req, name, [&](int dirfd, const char* n) {
    return mknodat(dirfd, n, in.mode, in.rdev);
  });
}

ReplyResult HandleMkdir(PassthroughFs& fs, FuseRequest& req) {
  fuse_mkdir_in in{};
  absl::string_view name;
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (int err = ReadLastName(req, &name); err != 0) return req.Error(err);
  return CreateEntry(fs, req, name, [&](int dirfd, const char* n) {
    return mkdirat(dirfd, n, in.mode);
  });
}

ReplyResult HandleSymlink(PassthroughFs& fs, FuseRequest& req) {
  absl::string_view name;
  absl::string_view target;
  if (int err = ReadName(req, &name); err != 0) return req.Error(err);
  if (!req.args().ReadCString(&target) || req.args().remaining() != 0) {
    return req.Error(EINVAL);
  }
  // The target is stored, never resolved by the daemon.
  if (target.empty()) return req.Error(ENOENT);
  if (target.size() >= PATH_MAX) return req.Error(ENAMETOOLONG);
  const std::string t(target);
  return CreateEntry(fs, req, name, [&](int dirfd, const char* n) {
    return symlinkat(t.c_str(), dirfd, n);
  });
}

ReplyResult HandleLink(PassthroughFs& fs, FuseRequest& req) {
  fuse_link_in in{};
  absl::string_view name;
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (int err = ReadLastName(req, &name); err != 0) return req.Error(err);
  if (fs.config().readonly) return req.Error(EROFS);
  auto target = fs.GetInode(in.oldnodeid);
  if (!target) return req.Error(ENOENT);
  if (target->is_dir()) return req.Error(EPERM);
  int err = 0;
  InodeFd target_fd = fs.PathFd(target, &err);
  if (err != 0) return req.Error(err);
  std::shared_ptr<const Inode> dir;
  InodeFd dirfd;
  if ((err = GetDir(fs, req.nodeid(), &dir, &dirfd)) != 0) {
    return req.Error(err);
  }
  const std::string n(name);
  if (linkat(target_fd.get(), "", dirfd.get(), n.c_str(), AT_EMPTY_PATH) != 0) {
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; the /proc link does not.
    if (errno != ENOENT && errno != EPERM) return req.Error(errno);
    if (linkat(AT_FDCWD, ProcFdPath(target_fd.get()).c_str(), dirfd.get(),
               n.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      return req.Error(errno);
    }
  }
  LookupResult r;
  if ((err = fs.Lookup(dir, name, &r)) != 0) return req.Error(err);
  return ReplyEntry(fs, req, r);
}

namespace {

ReplyResult Remove(PassthroughFs& fs, FuseRequest& req, int flags) {
  absl::string_view name;
  if (int err = ReadLastName(req, &name); err != 0) return req.Error(err);
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<const Inode> dir;
  InodeFd dirfd;
  if (int err = GetDir(fs, req.nodeid(), &dir, &dirfd); err != 0) {
    return req.Error(err);
  }
  const std::string n(name);
  const auto node = KnownNode(fs, dirfd.get(), name);
  if (unlinkat(dirfd.get(), n.c_str(), flags) != 0) return req.Error(errno);
  ForgetLocation(fs, node, dir->node_id, name);
  return req.Ok();
}

ReplyResult Rename(PassthroughFs& fs, FuseRequest& req, uint64_t newdir_id,
                   uint32_t flags) {
  absl::string_view old_name;
  absl::string_view new_name;
  if (int err = ReadName(req, &old_name); err != 0) return req.Error(err);
  if (int err = ReadLastName(req, &new_name); err != 0) return req.Error(err);
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) {
    return req.Error(EINVAL);
  }
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<const Inode> old_dir;
  std::shared_ptr<const Inode> new_dir;
  InodeFd old_fd;
  InodeFd new_fd;
  if (int err = GetDir(fs, req.nodeid(), &old_dir, &old_fd); err != 0) {
    return req.Error(err);
  }
  if (int err = GetDir(fs, newdir_id, &new_dir, &new_fd); err != 0) {
    return req.Error(err);
  }
  const std::string o(old_name);
  const std::string n(new_name);
  const auto moved = KnownNode(fs, old_fd.get(), old_name);
  const auto replaced = KnownNode(fs, new_fd.get(), new_name);
  if (renameat2(old_fd.get(), o.c_str(), new_fd.get(), n.c_str(), flags) != 0) {
    return req.Error(errno);
  }
  if (flags & RENAME_EXCHANGE) {
    if (replaced) {
      fs.inodes().SetLocation(*replaced, InodeLocation{old_dir->node_id, o});
    }
  } else {
    ForgetLocation(fs, replaced, new_dir->node_id, new_name);
  }
  if (moved)
    fs.inodes().SetLocation(*moved, InodeLocation{new_dir->node_id, n});
  return req.Ok();
}

}  // namespace

ReplyResult HandleUnlink(PassthroughFs& fs, FuseRequest& req) {
  return Remove(fs, req, 0);
}

ReplyResult HandleRmdir(PassthroughFs& fs, FuseRequest& req) {
  return Remove(fs, req, AT_REMOVEDIR);
}

ReplyResult HandleRename(PassthroughFs& fs, FuseRequest& req) {
  fuse_rename_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  return Rename(fs, req, in.newdir, 0);
}

ReplyResult HandleRename2(PassthroughFs& fs, FuseRequest& req) {
  fuse_rename2_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  return Rename(fs, req, in.newdir, in.flags);
}

int SanitizeOpenFlags(const FsConfig& config, int flags, int* out);

namespace {

// Rounds of "create, or else open what exists" before giving up on a name
// that keeps appearing and disappearing under CREATE.
constexpr int kCreateAttempts = 4;

// CREATE's file, open with `flags` in *file and entered in the inode table
// (one lookup reference) in *r: a new regular file, or, unless the guest
// asked for O_EXCL, the one already there.
//
// The file is created with O_EXCL whatever the guest asked, so this open
// never opens an existing file: a device node or FIFO under the name
// (a guest with root can make device nodes) would otherwise be opened on
// the host. An existing name goes the way OPEN goes instead, through its
// O_PATH fd, which opens regular files only (Reopen: ENXIO for devices,
// FIFOs and sockets, ELOOP for symlinks), and EISDIR for a directory as
// open(2) answers. A Linux guest sends CREATE only for names it believes
// missing, so that way is the rare race.
int CreateOrOpen(PassthroughFs& fs, FuseRequest& req, const fuse_create_in& in,
                 int flags, const std::shared_ptr<const Inode>& dir, int dirfd,
                 absl::string_view name, UniqueFd* file, LookupResult* r) {
  const bool exclusive = (static_cast<int>(in.flags) & O_EXCL) != 0;
  int err = 0;
  for (int attempt = 0; attempt < kCreateAttempts; ++attempt) {
    {
      ScopedFsCredentials creds(req.header().uid, req.header().gid);
      err = OpenBeneath(dirfd, name, flags | O_CREAT | O_EXCL, in.mode, file);
    }
    if (err == 0) {
      // The inode table gets exactly the file just created (by its fd),
      // not whatever the name points to by now.
      return fs.RegisterCreated(file->get(), dir, name, r);
    }
    if (err != EEXIST || exclusive) return err;
    err = fs.Lookup(dir, name, r);
    if (err == ENOENT) continue;  // removed again meanwhile: create it
    if (err != 0) return err;
    if (r->inode->is_dir()) {
      err = EISDIR;
    } else {
      ScopedFsCredentials creds(req.header().uid, req.header().gid);
      err = fs.Reopen(*r->inode, flags, file);
      // After O_TRUNC the attributes the lookup read are stale.
      if (err == 0) err = PassthroughFs::Stat(file->get(), &r->attr);
    }
    if (err != 0) fs.inodes().Forget(r->inode->node_id, 1);
    return err;
  }
  return err;
}

}  // namespace

ReplyResult HandleCreate(PassthroughFs& fs, FuseRequest& req) {
  fuse_create_in in{};
  absl::string_view name;
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (int err = ReadLastName(req, &name); err != 0) return req.Error(err);
  if (fs.config().readonly) return req.Error(EROFS);
  int flags = 0;
  if (int err =
          SanitizeOpenFlags(fs.config(), static_cast<int>(in.flags), &flags);
      err != 0) {
    return req.Error(err);
  }
  std::shared_ptr<const Inode> dir;
  InodeFd dirfd;
  if (int err = GetDir(fs, req.nodeid(), &dir, &dirfd); err != 0) {
    return req.Error(err);
  }
  UniqueFd file;
  LookupResult r;
  if (int err =
          CreateOrOpen(fs, req, in, flags, dir, dirfd.get(), name, &file, &r);
      err != 0) {
    return req.Error(err);
  }
  uint64_t fh = 0;
  if (int err = fs.AddOpenFile(*r.inode, std::move(file), flags, false, &fh);
      err != 0) {
    fs.inodes().Forget(r.inode->node_id, 1);
    return req.Error(err);
  }
  fuse_entry_out entry;
  fs.FillEntry(r, &entry);
  fuse_open_out open_out{};
  open_out.fh = fh;
  open_out.open_flags = fs.OpenReplyFlags(false);
  ReplyResult result =
      req.Ok({FuseRequest::AsBytes(entry), FuseRequest::AsBytes(open_out)});
  if (result.written <
      sizeof(fuse_out_header) + sizeof(entry) + sizeof(open_out)) {
    fs.ReleaseOpenFile(fh, r.inode->node_id, false);
    fs.inodes().Forget(r.inode->node_id, 1);
  }
  return result;
}

}  // namespace vhostmig::fs
