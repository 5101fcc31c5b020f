// DataPath: moves the bytes of READ and WRITE requests directly between
// guest memory (the chain's host iovecs) and files, with no bounce buffer.
// A queue pass collects the transfers of all the requests it popped and
// hands them over together, so an implementation can batch them (one
// io_uring submission per pass).
//
// Not thread-safe: each ring thread owns its own DataPath.
#ifndef VHOSTMIG_FS_DEVICE_DATA_PATH_H_
#define VHOSTMIG_FS_DEVICE_DATA_PATH_H_

#include <memory>

#include "absl/types/span.h"
#include "fs_device/fuse_request.h"

namespace vhostmig::fs {

class DataPath {
 public:
  virtual ~DataPath() = default;
  // Runs every transfer and sets its `result` (bytes moved or -errno).
  // Returns when all are done. Transfers of one batch were all in flight
  // at the same time in the guest, so they may run in any order.
  virtual void Run(absl::Span<DataTransfer* const> transfers) = 0;
};

// preadv/pwritev, one system call per transfer.
class SyncDataPath : public DataPath {
 public:
  void Run(absl::Span<DataTransfer* const> transfers) override;
  static void RunOne(DataTransfer& t);
};

// The best data path available: io_uring if `prefer_io_uring` and the
// kernel allows it (it may be disabled by sysctl or seccomp), else
// SyncDataPath.
std::unique_ptr<DataPath> MakeDataPath(bool prefer_io_uring);

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_DATA_PATH_H_
