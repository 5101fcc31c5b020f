// FUSE attribute requests: GETATTR, SETATTR, ACCESS, STATFS, READLINK and
// the xattr family.
#include <fcntl.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "fs_device/fuse_ops.h"

namespace vhostmig::fs {
namespace {

ReplyResult ReplyAttr(PassthroughFs& fs, FuseRequest& req, int fd) {
  struct statx st {};
  if (int err = PassthroughFs::Stat(fd, &st); err != 0) return req.Error(err);
  fuse_attr_out out{};
  out.attr_valid = fs.attr_timeout_sec();
  fs.FillAttr(st, &out.attr);
  return req.OkStruct(out);
}

// The inode of the request and an O_PATH fd for it, or an errno.
int RequestInodeFd(PassthroughFs& fs, FuseRequest& req,
                   std::shared_ptr<const Inode>* inode, InodeFd* fd) {
  *inode = fs.GetInode(req.nodeid());
  if (!*inode) return ENOENT;
  int err = 0;
  *fd = fs.PathFd(*inode, &err);
  return err;
}

// Xattr names: non-empty, at most XATTR_NAME_MAX (ERANGE, as the syscalls).
int CheckXattrName(absl::string_view name) {
  if (name.empty()) return EINVAL;
  if (name.size() > XATTR_NAME_MAX) return ERANGE;
  return 0;
}

}  // namespace

ReplyResult HandleGetattr(PassthroughFs& fs, FuseRequest& req) {
  fuse_getattr_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (in.getattr_flags & FUSE_GETATTR_FH) {
    std::shared_ptr<OpenFile> file;
    if (int err = fs.AnyOpenFileFor(in.fh, req.nodeid(), &file); err != 0) {
      return req.Error(err);
    }
    return ReplyAttr(fs, req, file->fd.get());
  }
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  return ReplyAttr(fs, req, fd.get());
}

ReplyResult HandleSetattr(PassthroughFs& fs, FuseRequest& req) {
  fuse_setattr_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<const Inode> inode;
  InodeFd path;
  if (int err = RequestInodeFd(fs, req, &inode, &path); err != 0) {
    return req.Error(err);
  }
  std::shared_ptr<OpenFile> file;
  if (in.valid & FATTR_FH) {
    if (int err = fs.AnyOpenFileFor(in.fh, req.nodeid(), &file); err != 0) {
      return req.Error(err);
    }
  }
  if (in.valid & FATTR_MODE) {
    // fchmod() refuses O_PATH fds; the /proc link reaches the inode.
    const int rc = file
                       ? fchmod(file->fd.get(), in.mode)
                       : (S_ISLNK(inode->type)
                              ? (errno = EOPNOTSUPP, -1)
                              : chmod(ProcFdPath(path.get()).c_str(), in.mode));
    if (rc != 0) return req.Error(errno);
  }
  if (in.valid & (FATTR_UID | FATTR_GID)) {
    const uid_t uid = (in.valid & FATTR_UID) ? in.uid : static_cast<uid_t>(-1);
    const gid_t gid = (in.valid & FATTR_GID) ? in.gid : static_cast<gid_t>(-1);
    if (fchownat(path.get(), "", uid, gid,
                 AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return req.Error(errno);
    }
  }
  if (in.valid & FATTR_SIZE) {
    if (in.size > static_cast<uint64_t>(INT64_MAX)) return req.Error(EINVAL);
    UniqueFd reopened;
    int fd;
    if (file) {
      fd = file->fd.get();
    } else {
      if (int err = fs.Reopen(*inode, O_WRONLY, &reopened); err != 0) {
        return req.Error(err);
      }
      fd = reopened.get();
    }
    if (ftruncate(fd, static_cast<off_t>(in.size)) != 0) {
      return req.Error(errno);
    }
  }
  if (in.valid & (FATTR_ATIME | FATTR_MTIME)) {
    struct timespec ts[2];
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_nsec = UTIME_OMIT;
    if (in.valid & FATTR_ATIME_NOW) {
      ts[0].tv_nsec = UTIME_NOW;
    } else if (in.valid & FATTR_ATIME) {
      ts[0].tv_sec = static_cast<time_t>(in.atime);
      ts[0].tv_nsec = in.atimensec;
    }
    if (in.valid & FATTR_MTIME_NOW) {
      ts[1].tv_nsec = UTIME_NOW;
    } else if (in.valid & FATTR_MTIME) {
      ts[1].tv_sec = static_cast<time_t>(in.mtime);
      ts[1].tv_nsec = in.mtimensec;
    }
    if (utimensat(path.get(), "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) !=
        0) {
      return req.Error(errno);
    }
  }
  return ReplyAttr(fs, req, path.get());
}

ReplyResult HandleAccess(PassthroughFs& fs, FuseRequest& req) {
  fuse_access_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  if ((in.mask & W_OK) && fs.config().readonly) return req.Error(EROFS);
  // Checked as the requester (AT_EACCESS uses the fs uid set here).
  ScopedFsCredentials creds(req.header().uid, req.header().gid);
  if (faccessat(fd.get(), "", static_cast<int>(in.mask),
                AT_EMPTY_PATH | AT_EACCESS) != 0) {
    return req.Error(errno);
  }
  return req.Ok();
}

ReplyResult HandleStatfs(PassthroughFs& fs, FuseRequest& req) {
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  struct statfs st {};
  if (fstatfs(fd.get(), &st) != 0) return req.Error(errno);
  fuse_statfs_out out{};
  out.st.blocks = st.f_blocks;
  out.st.bfree = st.f_bfree;
  out.st.bavail = st.f_bavail;
  out.st.files = st.f_files;
  out.st.ffree = st.f_ffree;
  out.st.bsize = static_cast<uint32_t>(st.f_bsize);
  out.st.namelen = static_cast<uint32_t>(st.f_namelen);
  out.st.frsize = static_cast<uint32_t>(st.f_frsize);
  return req.OkStruct(out);
}

ReplyResult HandleReadlink(PassthroughFs& fs, FuseRequest& req) {
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  if (!S_ISLNK(inode->type)) return req.Error(EINVAL);
  char buf[PATH_MAX];
  const ssize_t n = readlinkat(fd.get(), "", buf, sizeof(buf));
  if (n < 0) return req.Error(errno);
  return req.Ok({absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(buf), static_cast<size_t>(n))});
}

ReplyResult HandleSetxattr(PassthroughFs& fs, FuseRequest& req) {
  if (!fs.config().xattr) return req.Error(ENOSYS);
  // Without FUSE_SETXATTR_EXT (never negotiated) the kernel sends the
  // 8-byte form {size, flags}.
  fuse_setxattr_in in{};
  absl::string_view name;
  if (!req.args().ReadBytes(&in, FUSE_COMPAT_SETXATTR_IN_SIZE) ||
      !req.args().ReadCString(&name)) {
    return req.Error(EINVAL);
  }
  if (int err = CheckXattrName(name); err != 0) return req.Error(err);
  if (in.size > XATTR_SIZE_MAX) return req.Error(E2BIG);
  auto value = req.args().ReadRest();
  if (value.size() != in.size) return req.Error(EINVAL);
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  const std::string n(name);
  if (setxattr(ProcFdPath(fd.get()).c_str(), n.c_str(), value.data(),
               value.size(), static_cast<int>(in.flags)) != 0) {
    return req.Error(errno);
  }
  return req.Ok();
}

namespace {

// GETXATTR and LISTXATTR share their reply shape: a size probe (size 0)
// answers fuse_getxattr_out, otherwise the bytes or ERANGE.
template <typename Call>
ReplyResult ReplyXattrBytes(FuseRequest& req, uint32_t size, Call call) {
  if (size == 0) {
    const ssize_t n = call(nullptr, 0);
    if (n < 0) return req.Error(errno);
    fuse_getxattr_out out{};
    out.size = static_cast<uint32_t>(n);
    return req.OkStruct(out);
  }
  std::vector<uint8_t> buf(std::min<size_t>(size, XATTR_SIZE_MAX));
  const ssize_t n = call(buf.data(), buf.size());
  if (n < 0) return req.Error(errno);
  return req.Ok({absl::Span<const uint8_t>(buf.data(), n)});
}

}  // namespace

ReplyResult HandleGetxattr(PassthroughFs& fs, FuseRequest& req) {
  if (!fs.config().xattr) return req.Error(ENOSYS);
  fuse_getxattr_in in{};
  absl::string_view name;
  if (!req.args().Read(&in) || !req.args().ReadCString(&name) ||
      req.args().remaining() != 0) {
    return req.Error(EINVAL);
  }
  if (int err = CheckXattrName(name); err != 0) return req.Error(err);
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  const std::string path = ProcFdPath(fd.get());
  const std::string n(name);
  return ReplyXattrBytes(req, in.size, [&](void* buf, size_t len) {
    return getxattr(path.c_str(), n.c_str(), buf, len);
  });
}

ReplyResult HandleListxattr(PassthroughFs& fs, FuseRequest& req) {
  if (!fs.config().xattr) return req.Error(ENOSYS);
  fuse_getxattr_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  const std::string path = ProcFdPath(fd.get());
  return ReplyXattrBytes(req, in.size, [&](void* buf, size_t len) {
    return listxattr(path.c_str(), static_cast<char*>(buf), len);
  });
}

ReplyResult HandleRemovexattr(PassthroughFs& fs, FuseRequest& req) {
  if (!fs.config().xattr) return req.Error(ENOSYS);
  absl::string_view name;
  if (!req.args().ReadCString(&name) || req.args().remaining() != 0) {
    return req.Error(EINVAL);
  }
  if (int err = CheckXattrName(name); err != 0) return req.Error(err);
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<const Inode> inode;
  InodeFd fd;
  if (int err = RequestInodeFd(fs, req, &inode, &fd); err != 0) {
    return req.Error(err);
  }
  const std::string n(name);
  if (removexattr(ProcFdPath(fd.get()).c_str(), n.c_str()) != 0) {
    return req.Error(errno);
  }
  return req.Ok();
}

}  // namespace vhostmig::fs
