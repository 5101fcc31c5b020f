#include "fs_device/uring_data_path.h"

#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>

#include "base/errno_status.h"
#include "fs_device/iovec_slice.h"

namespace vhostmig::fs {
namespace {

std::atomic<int8_t>& NowaitHint(DataTransfer& t) {
  return t.kind == DataTransfer::Kind::kRead ? t.file->nowait_read
                                             : t.file->nowait_write;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UringDataPath>> UringDataPath::Create(
    unsigned entries) {
  auto path = std::unique_ptr<UringDataPath>(new UringDataPath(entries));
  // COOP_TASKRUN: completions of asynchronous requests are posted when this
  // thread next enters the kernel instead of interrupting it. Older kernels
  // reject the flag; the ring works without it.
  io_uring_params params{};
  params.flags = IORING_SETUP_COOP_TASKRUN;
  int rc = io_uring_queue_init_params(entries, &path->ring_, &params);
  if (rc == -EINVAL) rc = io_uring_queue_init(entries, &path->ring_, 0);
  if (rc < 0) return ErrnoStatus("io_uring_queue_init", -rc);
  path->entries_ = path->ring_.sq.ring_entries;
  return path;
}

UringDataPath::~UringDataPath() {
  if (!exited_) io_uring_queue_exit(&ring_);
}

void UringDataPath::Run(absl::Span<DataTransfer* const> transfers) {
  // Step 1: try everything without blocking, in one submission, except on
  // files known to refuse that.
  nowait_.clear();
  for (DataTransfer* t : transfers) {
    if (broken_ || NowaitHint(*t).load(std::memory_order_relaxed) < 0) {
      SyncDataPath::RunOne(*t);
    } else {
      nowait_.push_back(t);
    }
  }
  if (nowait_.empty()) return;
  RunRounds(nowait_, /*nowait=*/true);

  // Step 2: what could not be done without blocking.
  async_.clear();
  rest_.clear();
  rest_of_.clear();
  for (DataTransfer* t : nowait_) {
    const bool read = t->kind == DataTransfer::Kind::kRead;
    const size_t want = IovecsTotal(t->iov);
    if (t->result == -EOPNOTSUPP || (!read && t->result == -EAGAIN)) {
      // The file system cannot do this without blocking (or, for ext4's
      // buffered writes, says -EAGAIN every time): inline from now on.
      NowaitHint(*t).store(-1, std::memory_order_relaxed);
      SyncDataPath::RunOne(*t);
      continue;
    }
    if (t->result >= 0) {
      NowaitHint(*t).store(1, std::memory_order_relaxed);
    }
    if (t->result == -EAGAIN) {
      async_.push_back(t);  // a read that must wait for the disk
    } else if (t->result > 0 && static_cast<size_t>(t->result) < want) {
      // Partly cached, or the end of the file: the rest as a new transfer
      // (at the end of a file it just reads 0 bytes).
      DataTransfer& rest = rest_.emplace_back();
      rest.kind = t->kind;
      rest.file = t->file;
      rest.offset = t->offset + t->result;
      rest.iov = SliceIovecs(t->iov, t->result, want - t->result);
      rest_of_.emplace_back(t, t->result);
      if (read) {
        async_.push_back(&rest);
      } else {
        SyncDataPath::RunOne(rest);
      }
    }
  }
  if (!async_.empty()) RunRounds(async_, /*nowait=*/false);
  for (size_t i = 0; i < rest_of_.size(); ++i) {
    auto [t, done] = rest_of_[i];
    const int64_t more = rest_[i].result;
    // Bytes moved before an error still count; the guest sees a short
    // transfer, as with a partial preadv.
    t->result = done + std::max<int64_t>(more, 0);
  }
}

void UringDataPath::RunRounds(absl::Span<DataTransfer* const> transfers,
                              bool nowait) {
  while (!transfers.empty()) {
    const size_t n = std::min<size_t>(transfers.size(), entries_);
    if (broken_) {
      SyncDataPath().Run(transfers.first(n));
    } else {
      RunRound(transfers.first(n), nowait);
    }
    transfers.remove_prefix(n);
  }
}

void UringDataPath::RunRound(absl::Span<DataTransfer* const> transfers,
                             bool nowait) {
  constexpr int64_t kPending = INT64_MIN;
  for (DataTransfer* t : transfers) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      // Cannot happen with n <= entries and an empty ring; stay correct.
      SyncDataPath::RunOne(*t);
      continue;
    }
    const int fd = t->file->fd.get();
    const unsigned cnt = static_cast<unsigned>(t->iov.size());
    if (t->kind == DataTransfer::Kind::kRead) {
      io_uring_prep_readv(sqe, fd, t->iov.data(), cnt, t->offset);
    } else {
      io_uring_prep_writev(sqe, fd, t->iov.data(), cnt, t->offset);
    }
    if (nowait) sqe->rw_flags = RWF_NOWAIT;
    io_uring_sqe_set_data(sqe, t);
    t->result = kPending;
  }
  unsigned queued = 0;
  for (DataTransfer* t : transfers) queued += t->result == kPending;
  if (queued == 0) return;

  ++submit_calls_;
  unsigned submitted = 0;
  unsigned reaped = 0;
  while (reaped < queued) {
    if (submitted < queued) {
      // Submit and wait in one system call; what completes inline (every
      // RWF_NOWAIT request) is already there when it returns.
      const int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc > 0) submitted += static_cast<unsigned>(rc);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
        // The ring refuses work. Queued SQEs would run later against
        // buffers that are gone by then, so the ring is abandoned: wait for
        // what was accepted, then finish the rest without it.
        broken_ = true;
        queued = submitted;
        if (reaped >= queued) break;
      }
    }
    io_uring_cqe* cqe = nullptr;
    const int wrc = io_uring_wait_cqe(&ring_, &cqe);
    if (wrc == -EINTR) continue;
    if (wrc < 0) {
      broken_ = true;
      break;
    }
    auto* t = static_cast<DataTransfer*>(io_uring_cqe_get_data(cqe));
    t->result = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    ++reaped;
  }
  for (DataTransfer* t : transfers) {
    if (t->result == kPending) SyncDataPath::RunOne(*t);
  }
  if (broken_) {
    io_uring_queue_exit(&ring_);
    exited_ = true;
  }
}

}  // namespace vhostmig::fs
