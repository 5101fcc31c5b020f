// UringDataPath: a DataPath over one io_uring that never hands a page-cache
// hit to a kernel worker thread.
//
// A batch runs in up to two io_uring submissions:
//   1. Every transfer is queued with RWF_NOWAIT and the whole batch goes in
//      one io_uring_submit: what the page cache can serve completes inside
//      that system call, with no thread hand-off and one syscall for many
//      requests.
//   2. A READ that would block (-EAGAIN: not cached) or came back short is
//      resubmitted (its remainder) without RWF_NOWAIT, again all together;
//      io_uring then runs them asynchronously, in parallel.
// Where the host file system cannot try without blocking at all (tmpfs:
// -EOPNOTSUPP; ext4 buffered writes: always -EAGAIN), io_uring would hand
// every request to a worker thread, which costs two context switches for
// what is a memory copy; such transfers run inline with preadv/pwritev
// instead, and the file remembers it (OpenFile::nowait_read/nowait_write)
// so later batches skip step 1 for it. More transfers than the ring holds
// go in ring-sized rounds.
//
// If the kernel refuses the ring mid-way, the remaining transfers (and all
// later ones) fall back to preadv/pwritev: a request is never dropped.
//
// One instance per ring thread; not thread-safe.
#ifndef VHOSTMIG_FS_DEVICE_URING_DATA_PATH_H_
#define VHOSTMIG_FS_DEVICE_URING_DATA_PATH_H_

#include <liburing.h>

#include <deque>
#include <memory>
#include <vector>

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
  // Runs `transfers` through the ring in ring-sized rounds (or inline once
  // the ring is broken).
  void RunRounds(absl::Span<DataTransfer* const> transfers, bool nowait);
  // Runs transfers[0..n) (n <= entries_) as one submission.
  void RunRound(absl::Span<DataTransfer* const> transfers, bool nowait);

  io_uring ring_{};
  unsigned entries_;
  uint64_t submit_calls_ = 0;
  // After a hard io_uring error the ring is torn down and every later
  // transfer goes through SyncDataPath.
  bool broken_ = false;
  bool exited_ = false;
  // Scratch of Run, kept to avoid allocations per batch.
  std::vector<DataTransfer*> nowait_;
  std::vector<DataTransfer*> async_;
  // Remainders of short non-blocking reads (stable addresses) and the bytes
  // their originals already moved.
  std::deque<DataTransfer> rest_;
  std::vector<std::pair<DataTransfer*, int64_t>> rest_of_;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_URING_DATA_PATH_H_
