// FUSE session requests: INIT, DESTROY, INTERRUPT, SYNCFS.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>

#include "fs_device/fuse_ops.h"

namespace vhostmig::fs {

// Locks, writeback cache, DAX, ACLs and security contexts are not offered:
// their requests would fail.
uint64_t SupportedInitFlags(const FsConfig& config) {
  uint64_t flags = FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_BIG_WRITES |
                   FUSE_ATOMIC_O_TRUNC | FUSE_MAX_PAGES;
  if (config.cache == CachePolicy::kAuto) flags |= FUSE_AUTO_INVAL_DATA;
  // As virtiofsd: READDIRPLUS only pays off when entries may be cached.
  if (config.cache != CachePolicy::kNever) {
    flags |= FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO;
  }
  if (config.announce_submounts) flags |= FUSE_SUBMOUNTS;
  return flags;
}

ReplyResult HandleInit(PassthroughFs& fs, FuseRequest& req) {
  fuse_init_in in{};
  // Kernels before 7.36 send only up to `flags`; later ones the whole struct.
  const size_t n = std::min(req.args().remaining(), sizeof(in));
  if (n < offsetof(fuse_init_in, flags2) || !req.args().ReadBytes(&in, n)) {
    return req.Error(EINVAL);
  }
  if (in.major < 7) return req.Error(EPROTO);
  fuse_init_out out{};
  out.major = FUSE_KERNEL_VERSION;
  out.minor = FUSE_KERNEL_MINOR_VERSION;
  if (in.major > 7) {
    // The kernel retries INIT with our major version (fuse.h, "INIT
    // request/reply flags").
    return req.OkStruct(out);
  }
  // Before 7.12 several argument structs had other sizes.
  if (in.minor < 12) return req.Error(EPROTO);
  uint64_t kernel_flags = in.flags;
  if (in.flags & FUSE_INIT_EXT) {
    kernel_flags |= static_cast<uint64_t>(in.flags2) << 32;
  }
  const uint64_t negotiated = kernel_flags & SupportedInitFlags(fs.config());

  out.max_readahead = in.max_readahead;
  out.flags = static_cast<uint32_t>(negotiated);
  out.flags2 = static_cast<uint32_t>(negotiated >> 32);
  out.max_background = 64;
  out.congestion_threshold = 48;
  out.max_write = kMaxTransferBytes;
  out.time_gran = 1;
  out.max_pages = (negotiated & FUSE_MAX_PAGES) ? kMaxPages : 0;

  FuseSession session;
  session.initialized = true;
  session.major = 7;
  session.minor = std::min<uint32_t>(in.minor, FUSE_KERNEL_MINOR_VERSION);
  session.flags = negotiated;
  session.max_write = out.max_write;
  session.max_pages = out.max_pages;
  session.max_readahead = out.max_readahead;
  fs.SetSession(session);

  if (in.minor < 23) {
    // fuse_init_out was 24 bytes until 7.23.
    return req.Ok(
        {FuseRequest::AsBytes(out).first(FUSE_COMPAT_22_INIT_OUT_SIZE)});
  }
  return req.OkStruct(out);
}

ReplyResult HandleDestroy(PassthroughFs& fs, FuseRequest& req) {
  fs.Reset();
  return req.Ok();
}

ReplyResult HandleInterrupt(PassthroughFs& fs, FuseRequest& req) {
  // Requests run to completion within one queue pass, so there is never
  // anything to interrupt; INTERRUPT itself has no reply.
  return req.NoReply();
}

ReplyResult HandleSyncfs(PassthroughFs& fs, FuseRequest& req) {
  fuse_syncfs_in in{};
  if (!req.args().Read(&in)) return req.Error(EINVAL);
  // syncfs() needs a real fd, not the root's O_PATH one.
  int fd = openat(fs.root_fd(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return req.Error(errno);
  const int rc = syncfs(fd);
  const int err = errno;
  close(fd);
  if (rc != 0) return req.Error(err);
  return req.Ok();
}

}  // namespace vhostmig::fs
