// FuseDispatcher: routes FUSE requests to the handler families and runs a
// queue pass's requests as one batch: metadata requests complete
// immediately, the READ/WRITE transfers of the whole batch go to the
// DataPath together, then those requests are completed.
//
// Before INIT every request but INIT fails with EIO. Opcodes the daemon
// does not implement (locks, ioctl, poll, bmap, DAX mappings, ...) and
// unknown ones fail with ENOSYS, which also tells the guest kernel to stop
// sending them.
//
// Thread-safe: one dispatcher serves all ring threads (the file system it
// uses is thread-safe); each thread passes its own DataPath.
#ifndef VHOSTMIG_FS_DEVICE_FUSE_DISPATCHER_H_
#define VHOSTMIG_FS_DEVICE_FUSE_DISPATCHER_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "fs_device/data_path.h"
#include "fs_device/fuse_request.h"
#include "fs_device/passthrough_fs.h"

namespace vhostmig::fs {

class FuseDispatcher {
 public:
  explicit FuseDispatcher(PassthroughFs* fs) : fs_(fs) {}

  // Handles the requests in `chains` and returns, per chain, the exact
  // number of bytes written into its writable part.
  std::vector<uint32_t> ProcessBatch(absl::Span<const FuseChain> chains,
                                     DataPath& data_path);

  // One request, data transfers done synchronously.
  uint32_t ProcessOne(const FuseChain& chain);

 private:
  ReplyResult Dispatch(FuseRequest& req);

  PassthroughFs* fs_;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_FUSE_DISPATCHER_H_
