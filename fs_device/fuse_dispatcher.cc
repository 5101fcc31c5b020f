#include "fs_device/fuse_dispatcher.h"

#include <linux/fuse.h>

#include <cerrno>

#include "fs_device/fuse_ops.h"

namespace vhostmig::fs {
namespace {

FuseHandler HandlerFor(uint32_t opcode) {
  switch (opcode) {
    case FUSE_INIT:
      return HandleInit;
    case FUSE_DESTROY:
      return HandleDestroy;
    case FUSE_INTERRUPT:
      return HandleInterrupt;
    case FUSE_SYNCFS:
      return HandleSyncfs;

    case FUSE_LOOKUP:
      return HandleLookup;
    case FUSE_FORGET:
      return HandleForget;
    case FUSE_BATCH_FORGET:
      return HandleBatchForget;
    case FUSE_MKNOD:
      return HandleMknod;
    case FUSE_MKDIR:
      return HandleMkdir;
    case FUSE_SYMLINK:
      return HandleSymlink;
    case FUSE_LINK:
      return HandleLink;
    case FUSE_UNLINK:
      return HandleUnlink;
    case FUSE_RMDIR:
      return HandleRmdir;
    case FUSE_RENAME:
      return HandleRename;
    case FUSE_RENAME2:
      return HandleRename2;
    case FUSE_CREATE:
      return HandleCreate;

    case FUSE_GETATTR:
      return HandleGetattr;
    case FUSE_SETATTR:
      return HandleSetattr;
    case FUSE_ACCESS:
      return HandleAccess;
    case FUSE_STATFS:
      return HandleStatfs;
    case FUSE_READLINK:
      return HandleReadlink;
    case FUSE_SETXATTR:
      return HandleSetxattr;
    case FUSE_GETXATTR:
      return HandleGetxattr;
    case FUSE_LISTXATTR:
      return HandleListxattr;
    case FUSE_REMOVEXATTR:
      return HandleRemovexattr;

    case FUSE_OPEN:
      return HandleOpen;
    case FUSE_READ:
      return HandleRead;
    case FUSE_WRITE:
      return HandleWrite;
    case FUSE_FLUSH:
      return HandleFlush;
    case FUSE_RELEASE:
      return HandleRelease;
    case FUSE_FSYNC:
      return HandleFsync;
    case FUSE_FALLOCATE:
      return HandleFallocate;
    case FUSE_LSEEK:
      return HandleLseek;
    case FUSE_COPY_FILE_RANGE:
      return HandleCopyFileRange;

    case FUSE_OPENDIR:
      return HandleOpendir;
    case FUSE_READDIR:
      return HandleReaddir;
    case FUSE_READDIRPLUS:
      return HandleReaddirplus;
    case FUSE_RELEASEDIR:
      return HandleReleasedir;
    case FUSE_FSYNCDIR:
      return HandleFsyncdir;

    default:
      // GETLK, SETLK, SETLKW, IOCTL, POLL, BMAP, SETUPMAPPING,
      // REMOVEMAPPING, TMPFILE, NOTIFY_REPLY and anything unknown.
      return nullptr;
  }
}

}  // namespace

ReplyResult FuseDispatcher::Dispatch(FuseRequest& req) {
  if (req.parse_error() != 0) return req.Error(req.parse_error());
  const uint32_t opcode = req.opcode();
  if (opcode != FUSE_INIT && !fs_->session().initialized) {
    // FORGET has no reply even when it is out of place.
    if (opcode == FUSE_FORGET || opcode == FUSE_BATCH_FORGET) {
      return req.NoReply();
    }
    return req.Error(EIO);
  }
  FuseHandler handler = HandlerFor(opcode);
  if (handler == nullptr) return req.Error(ENOSYS);
  return handler(*fs_, req);
}

std::vector<uint32_t> FuseDispatcher::ProcessBatch(
    absl::Span<const FuseChain> chains, DataPath& data_path) {
  std::vector<uint32_t> written(chains.size(), 0);
  std::vector<FuseRequest> deferred_requests;
  std::vector<size_t> deferred_index;
  for (size_t i = 0; i < chains.size(); ++i) {
    FuseRequest req = FuseRequest::Parse(chains[i]);
    ReplyResult r = Dispatch(req);
    if (r.deferred) {
      deferred_requests.push_back(std::move(req));
      deferred_index.push_back(i);
    } else {
      written[i] = r.written;
    }
  }
  if (deferred_requests.empty()) return written;
  std::vector<DataTransfer*> transfers;
  transfers.reserve(deferred_requests.size());
  for (FuseRequest& req : deferred_requests) {
    transfers.push_back(req.transfer());
  }
  data_path.Run(transfers);
  for (size_t k = 0; k < deferred_requests.size(); ++k) {
    written[deferred_index[k]] =
        deferred_requests[k].CompleteTransfer().written;
  }
  return written;
}

uint32_t FuseDispatcher::ProcessOne(const FuseChain& chain) {
  SyncDataPath sync;
  return ProcessBatch(absl::MakeConstSpan(&chain, 1), sync)[0];
}

}  // namespace vhostmig::fs
