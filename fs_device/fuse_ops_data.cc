// FUSE data requests on open files: OPEN, READ, WRITE, FLUSH, RELEASE,
// FSYNC, FALLOCATE, LSEEK, COPY_FILE_RANGE. READ and WRITE only validate
// and describe the transfer; the data path moves the bytes between guest
// memory and the file without a bounce copy.
#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "fs_device/fuse_ops.h"
#include "fs_device/iovec_slice.h"

namespace vhostmig::fs {

// Keeps the open(2) flags that mean the same on the host, and refuses write
// access on a read-only share. O_DIRECT is dropped (guest buffers need not
// meet the host file system's alignment), O_NOATIME too (it fails for files
// the daemon does not own), and kernel-internal bits such as __FMODE_EXEC
// that openat2 would reject.
int SanitizeOpenFlags(const FsConfig& config, int flags, int* out) {
  constexpr int kKept = O_ACCMODE | O_APPEND | O_TRUNC | O_NONBLOCK | O_SYNC |
                        O_DSYNC | O_LARGEFILE;
  flags &= kKept;
  if ((flags & O_ACCMODE) == O_ACCMODE) return EINVAL;
  if (config.readonly &&
      ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))) {
    return EROFS;
  }
  *out = flags;
  return 0;
}

ReplyResult HandleOpen(PassthroughFs& fs, FuseRequest& req) {
  fuse_open_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  auto inode = fs.GetInode(req.nodeid());
  if (!inode) return req.Error(ENOENT);
  if (inode->is_dir()) return req.Error(EISDIR);
  int flags = 0;
  if (int err =
          SanitizeOpenFlags(fs.config(), static_cast<int>(in.flags), &flags);
      err != 0) {
    return req.Error(err);
  }
  UniqueFd fd;
  if (int err = fs.Reopen(*inode, flags, &fd); err != 0) return req.Error(err);
  uint64_t fh = 0;
  if (int err = fs.AddOpenFile(*inode, std::move(fd), flags, false, &fh);
      err != 0) {
    return req.Error(err);
  }
  fuse_open_out out{};
  out.fh = fh;
  out.open_flags = fs.OpenReplyFlags(false);
  ReplyResult result = req.OkStruct(out);
  if (result.written < sizeof(fuse_out_header) + sizeof(out)) {
    fs.ReleaseOpenFile(fh, inode->node_id, false);
  }
  return result;
}

ReplyResult HandleRead(PassthroughFs& fs, FuseRequest& req) {
  fuse_read_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  std::shared_ptr<OpenFile> file;
  if (int err = fs.OpenFileFor(in.fh, req.nodeid(), false, &file); err != 0) {
    return req.Error(err);
  }
  if ((file->flags & O_ACCMODE) == O_WRONLY) return req.Error(EBADF);
  if (in.offset > static_cast<uint64_t>(INT64_MAX)) return req.Error(EINVAL);
  // Never more than the guest asked for, than its buffer holds, or than
  // was negotiated.
  const size_t size = std::min<size_t>(
      {in.size, req.reply_capacity(), static_cast<size_t>(kMaxTransferBytes)});
  if (size == 0) return req.Ok();
  DataTransfer t;
  t.kind = DataTransfer::Kind::kRead;
  t.file = std::move(file);
  t.offset = in.offset;
  t.iov = req.ReplyPayloadIovecs(size);
  if (t.iov.size() > IOV_MAX) return req.Error(EINVAL);
  return req.Defer(std::move(t));
}

ReplyResult HandleWrite(PassthroughFs& fs, FuseRequest& req) {
  fuse_write_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<OpenFile> file;
  if (int err = fs.OpenFileFor(in.fh, req.nodeid(), false, &file); err != 0) {
    return req.Error(err);
  }
  if ((file->flags & O_ACCMODE) == O_RDONLY) return req.Error(EBADF);
  if (in.offset > static_cast<uint64_t>(INT64_MAX)) return req.Error(EINVAL);
  if (in.size > kMaxTransferBytes) return req.Error(EINVAL);
  if (in.size == 0) return req.OkStruct(fuse_write_out{});
  DataTransfer t;
  t.kind = DataTransfer::Kind::kWrite;
  t.iov = req.InData(sizeof(fuse_write_in), in.size);
  // The chain must actually carry the bytes the header claims.
  if (IovecsTotal(t.iov) != in.size) return req.Error(EINVAL);
  if (t.iov.size() > IOV_MAX) return req.Error(EINVAL);
  t.file = std::move(file);
  t.offset = in.offset;
  return req.Defer(std::move(t));
}

ReplyResult HandleFlush(PassthroughFs& fs, FuseRequest& req) {
  fuse_flush_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  std::shared_ptr<OpenFile> file;
  if (int err = fs.OpenFileFor(in.fh, req.nodeid(), false, &file); err != 0) {
    return req.Error(err);
  }
  // close() of a duplicate gives the host file system its close-time
  // semantics (NFS flushes, errors surface) while the handle stays open.
  int dup = fcntl(file->fd.get(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return req.Error(errno);
  if (close(dup) != 0 && errno != EINTR) return req.Error(errno);
  return req.Ok();
}

ReplyResult ReleaseHandle(PassthroughFs& fs, FuseRequest& req, bool directory) {
  fuse_release_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (int err = fs.ReleaseOpenFile(in.fh, req.nodeid(), directory); err != 0) {
    return req.Error(err);
  }
  return req.Ok();
}

ReplyResult SyncHandle(PassthroughFs& fs, FuseRequest& req, bool directory) {
  fuse_fsync_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  std::shared_ptr<OpenFile> file;
  if (int err = fs.OpenFileFor(in.fh, req.nodeid(), directory, &file);
      err != 0) {
    return req.Error(err);
  }
  const int rc = (in.fsync_flags & FUSE_FSYNC_FDATASYNC)
                     ? fdatasync(file->fd.get())
                     : fsync(file->fd.get());
  if (rc != 0) return req.Error(errno);
  return req.Ok();
}

ReplyResult HandleRelease(PassthroughFs& fs, FuseRequest& req) {
  return ReleaseHandle(fs, req, /*directory=*/false);
}

ReplyResult HandleFsync(PassthroughFs& fs, FuseRequest& req) {
  return SyncHandle(fs, req, /*directory=*/false);
}

ReplyResult HandleFallocate(PassthroughFs& fs, FuseRequest& req) {
  fuse_fallocate_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (fs.config().readonly) return req.Error(EROFS);
  std::shared_ptr<OpenFile> file;
  if (int err = fs.OpenFileFor(in.fh, req.nodeid(), false, &file); err != 0) {
    return req.Error(err);
  }
  if (in.offset > static_cast<uint64_t>(INT64_MAX) ||
      in.length > static_cast<uint64_t>(INT64_MAX)) {
    return req.Error(EINVAL);
  }
  if (fallocate(file->fd.get(), static_cast<int>(in.mode),
                static_cast<off_t>(in.offset),
                static_cast<off_t>(in.length)) != 0) {
    return req.Error(errno);
  }
  return req.Ok();
}

ReplyResult HandleLseek(PassthroughFs& fs, FuseRequest& req) {
  fuse_lseek_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  std::shared_ptr<OpenFile> file;
  if (int err = fs.OpenFileFor(in.fh, req.nodeid(), false, &file); err != 0) {
    return req.Error(err);
  }
  // The kernel forwards only SEEK_DATA and SEEK_HOLE; positions relative to
  // a file offset mean nothing here (I/O is positional).
  if (in.whence != SEEK_DATA && in.whence != SEEK_HOLE &&
      in.whence != SEEK_SET && in.whence != SEEK_END) {
    return req.Error(EINVAL);
  }
  if (in.offset > static_cast<uint64_t>(INT64_MAX)) return req.Error(EINVAL);
  const off_t off = lseek(file->fd.get(), static_cast<off_t>(in.offset),
                          static_cast<int>(in.whence));
  if (off < 0) return req.Error(errno);
  fuse_lseek_out out{};
  out.offset = static_cast<uint64_t>(off);
  return req.OkStruct(out);
}

ReplyResult HandleCopyFileRange(PassthroughFs& fs, FuseRequest& req) {
  fuse_copy_file_range_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  if (fs.config().readonly) return req.Error(EROFS);
  if (in.flags != 0) return req.Error(EINVAL);
  std::shared_ptr<OpenFile> src;
  std::shared_ptr<OpenFile> dst;
  if (int err = fs.OpenFileFor(in.fh_in, req.nodeid(), false, &src); err != 0) {
    return req.Error(err);
  }
  if (int err = fs.OpenFileFor(in.fh_out, in.nodeid_out, false, &dst);
      err != 0) {
    return req.Error(err);
  }
  if (in.off_in > static_cast<uint64_t>(INT64_MAX) ||
      in.off_out > static_cast<uint64_t>(INT64_MAX)) {
    return req.Error(EINVAL);
  }
  // The reply's size field is 32 bits.
  const size_t len = std::min<uint64_t>(in.len, UINT32_MAX & ~4095u);
  loff_t off_in = static_cast<loff_t>(in.off_in);
  loff_t off_out = static_cast<loff_t>(in.off_out);
  const ssize_t n =
      copy_file_range(src->fd.get(), &off_in, dst->fd.get(), &off_out, len, 0);
  if (n < 0) return req.Error(errno);
  fuse_write_out out{};
  out.size = static_cast<uint32_t>(n);
  return req.OkStruct(out);
}

}  // namespace vhostmig::fs
