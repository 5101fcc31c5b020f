// UringDataPath: a DataPath over one io_uring. All transfers of a batch are
// queued as READV/WRITEV and submitted with a single io_uring_submit (more
// than the ring holds go in ring-sized rounds), then reaped.
//
// If the kernel refuses the ring mid-way, the remaining transfers (and all
// later ones) fall back to preadv/pwritev: a request is never dropped.
//
// One instance per ring thread; not thread-safe.
#ifndef VHOSTMIG_FS_DEVICE_URING_DATA_PATH_H_
#define VHOSTMIG_FS_DEVICE_URING_DATA_PATH_H_

#include <liburing.h>

#include <memory>

#include "absl/status/statusor.h"
#include "fs_device/data_path.h"

namespace vhostmig::fs {

class UringDataPath : public DataPath {
 public:
  static constexpr unsigned kDefaultEntries = 256;

  static absl::StatusOr<std::unique_ptr<UringDataPath>> Create(
      unsigned entries = kDefaultEntries);
  ~UringDataPath() override;
  UringDataPath(const UringDataPath&) = delete;
  UringDataPath& operator=(const UringDataPath&) = delete;

  void Run(absl::Span<DataTransfer* const> transfers) override;

  // Submissions made so far (a test observes batching through it).
  uint64_t submit_calls() const { return submit_calls_; }

 private:
  UringDataPath(unsigned entries) : entries_(entries) {}
  // Runs transfers[0..n) (n <= entries_) as one submission.
  void RunRound(absl::Span<DataTransfer* const> transfers);

  io_uring ring_{};
  unsigned entries_;
  uint64_t submit_calls_ = 0;
  // After a hard io_uring error the ring is torn down and every later
  // transfer goes through SyncDataPath.
  bool broken_ = false;
  bool exited_ = false;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_URING_DATA_PATH_H_
