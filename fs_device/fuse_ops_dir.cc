// FUSE directory requests: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR,
// FSYNCDIR.
#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

#include "fs_device/fuse_ops.h"

namespace vhostmig::fs {
namespace {

// The record getdents64 returns (glibc exports no type for it).
struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  uint16_t d_reclen;
  uint8_t d_type;
  char d_name[];
};

size_t DirentSize(size_t namelen, bool plus) {
  const size_t base = plus ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET;
  return FUSE_DIRENT_ALIGN(base + namelen);
}

ReplyResult ReadDirectory(PassthroughFs& fs, FuseRequest& req, bool plus) {
  fuse_read_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  std::shared_ptr<OpenFile> file;
  if (int err = fs.OpenFileFor(in.fh, req.nodeid(), true, &file); err != 0) {
    return req.Error(err);
  }
  std::shared_ptr<const Inode> dir;
  if (plus) {
    dir = fs.GetInode(req.nodeid());
    if (!dir) return req.Error(ENOENT);
  }
  const size_t capacity = std::min<size_t>(
      {in.size, req.reply_capacity(), static_cast<size_t>(kMaxTransferBytes)});
  // Zero-filled, so alignment padding never leaks daemon memory.
  std::vector<uint8_t> out(capacity, 0);
  size_t used = 0;

  absl::MutexLock lock(&file->dir_mu);
  const int fd = file->fd.get();
  if (lseek(fd, static_cast<off_t>(in.offset), SEEK_SET) < 0) {
    return req.Error(errno);
  }
  alignas(LinuxDirent64) char buf[16384];
  bool full = false;
  while (!full) {
    const long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
    if (n < 0) {
      if (used == 0) return req.Error(errno);
      break;
    }
    if (n == 0) break;
    for (long pos = 0; pos < n;) {
      const auto* d = reinterpret_cast<const LinuxDirent64*>(buf + pos);
      pos += d->d_reclen;
      const size_t namelen = strnlen(d->d_name, NAME_MAX + 1);
      const size_t size = DirentSize(namelen, plus);
      if (used + size > capacity) {
        // The guest asks again from this entry's offset.
        full = true;
        break;
      }
      fuse_dirent* dirent;
      if (plus) {
        auto* p = reinterpret_cast<fuse_direntplus*>(out.data() + used);
        const absl::string_view name(d->d_name, namelen);
        // "." and ".." carry no entry (node id 0: the kernel skips them);
        // a name that vanished since getdents gets none either.
        LookupResult r;
        if (name != "." && name != ".." && fs.Lookup(dir, name, &r) == 0) {
          fs.FillEntry(r, &p->entry_out);
        }
        dirent = &p->dirent;
      } else {
        dirent = reinterpret_cast<fuse_dirent*>(out.data() + used);
      }
      dirent->ino = d->d_ino;
      dirent->off = static_cast<uint64_t>(d->d_off);
      dirent->namelen = static_cast<uint32_t>(namelen);
      dirent->type = d->d_type;
      std::memcpy(dirent->name, d->d_name, namelen);
      used += size;
    }
  }
  return req.Ok({absl::Span<const uint8_t>(out.data(), used)});
}

}  // namespace

ReplyResult HandleOpendir(PassthroughFs& fs, FuseRequest& req) {
  fuse_open_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  auto inode = fs.GetInode(req.nodeid());
  if (!inode) return req.Error(ENOENT);
  if (!inode->is_dir()) return req.Error(ENOTDIR);
  UniqueFd fd;
  if (int err = fs.Reopen(*inode, O_RDONLY | O_DIRECTORY, &fd); err != 0) {
    return req.Error(err);
  }
  uint64_t fh = 0;
  if (int err = fs.AddOpenFile(*inode, std::move(fd), O_RDONLY | O_DIRECTORY,
                               true, &fh);
      err != 0) {
    return req.Error(err);
  }
  fuse_open_out out{};
  out.fh = fh;
  out.open_flags = fs.OpenReplyFlags(true);
  ReplyResult result = req.OkStruct(out);
  if (result.written < sizeof(fuse_out_header) + sizeof(out)) {
    fs.ReleaseOpenFile(fh, inode->node_id, true);
  }
  return result;
}

ReplyResult HandleReaddir(PassthroughFs& fs, FuseRequest& req) {
  return ReadDirectory(fs, req, false);
}

ReplyResult HandleReaddirplus(PassthroughFs& fs, FuseRequest& req) {
  return ReadDirectory(fs, req, true);
}

ReplyResult HandleReleasedir(PassthroughFs& fs, FuseRequest& req) {
  return ReleaseHandle(fs, req, /*directory=*/true);
}

ReplyResult HandleFsyncdir(PassthroughFs& fs, FuseRequest& req) {
  return SyncHandle(fs, req, /*directory=*/true);
}

}  // namespace vhostmig::fs
