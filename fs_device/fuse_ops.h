// The FUSE request handlers, one function per opcode, grouped by family in
// fuse_ops_{session,entry,attr,data,dir}.cc. Each takes the file system and
// a parsed request whose header is valid and whose session is initialized
// (the dispatcher checks both), reads its own arguments (failing with
// EINVAL when they are short or malformed) and returns what it wrote.
#ifndef VHOSTMIG_FS_DEVICE_FUSE_OPS_H_
#define VHOSTMIG_FS_DEVICE_FUSE_OPS_H_

#include "fs_device/fuse_request.h"
#include "fs_device/passthrough_fs.h"

namespace vhostmig::fs {

using FuseHandler = ReplyResult (*)(PassthroughFs& fs, FuseRequest& req);

// Largest READ/WRITE/READDIR the daemon negotiates (max_pages * 4 KiB).
inline constexpr uint32_t kMaxTransferBytes = 1u << 20;
inline constexpr uint32_t kMaxPages = kMaxTransferBytes / 4096;

// What the daemon can do under `config`: INIT answers with the
// intersection with what the kernel offers, and a migration destination
// refuses a session that negotiated more.
uint64_t SupportedInitFlags(const FsConfig& config);

// Session (fuse_ops_session.cc).
ReplyResult HandleInit(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleDestroy(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleInterrupt(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleSyncfs(PassthroughFs& fs, FuseRequest& req);

// Entries (fuse_ops_entry.cc).
ReplyResult HandleLookup(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleForget(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleBatchForget(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleMknod(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleMkdir(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleSymlink(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleLink(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleUnlink(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleRmdir(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleRename(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleRename2(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleCreate(PassthroughFs& fs, FuseRequest& req);

// Attributes (fuse_ops_attr.cc).
ReplyResult HandleGetattr(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleSetattr(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleAccess(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleStatfs(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleReadlink(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleSetxattr(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleGetxattr(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleListxattr(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleRemovexattr(PassthroughFs& fs, FuseRequest& req);

// Data (fuse_ops_data.cc). READ and WRITE defer their transfer.
ReplyResult HandleOpen(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleRead(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleWrite(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleFlush(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleRelease(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleFsync(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleFallocate(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleLseek(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleCopyFileRange(PassthroughFs& fs, FuseRequest& req);

// Directories (fuse_ops_dir.cc).
ReplyResult HandleOpendir(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleReaddir(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleReaddirplus(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleReleasedir(PassthroughFs& fs, FuseRequest& req);
ReplyResult HandleFsyncdir(PassthroughFs& fs, FuseRequest& req);

// RELEASE/RELEASEDIR and FSYNC/FSYNCDIR differ only in the kind of handle
// they accept (fuse_ops_data.cc).
ReplyResult ReleaseHandle(PassthroughFs& fs, FuseRequest& req, bool directory);
ReplyResult SyncHandle(PassthroughFs& fs, FuseRequest& req, bool directory);

// Shared argument helpers.

// Reads a name component that must be the last argument, validated with
// PassthroughFs::CheckName. Returns 0 or the errno to reply with.
int ReadLastName(FuseRequest& req, absl::string_view* name);
// Reads a name component followed by more arguments.
int ReadName(FuseRequest& req, absl::string_view* name);

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_FUSE_OPS_H_
