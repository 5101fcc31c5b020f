#include "fs_device/uring_data_path.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>

#include "base/errno_status.h"

namespace vhostmig::fs {

absl::StatusOr<std::unique_ptr<UringDataPath>> UringDataPath::Create(
    unsigned entries) {
  auto path = std::unique_ptr<UringDataPath>(new UringDataPath(entries));
  const int rc = io_uring_queue_init(entries, &path->ring_, 0);
  if (rc < 0) return ErrnoStatus("io_uring_queue_init", -rc);
  path->entries_ = path->ring_.sq.ring_entries;
  return path;
}

UringDataPath::~UringDataPath() {
  if (!exited_) io_uring_queue_exit(&ring_);
}

void UringDataPath::Run(absl::Span<DataTransfer* const> transfers) {
  while (!transfers.empty()) {
    const size_t n = std::min<size_t>(transfers.size(), entries_);
    if (broken_) {
      SyncDataPath().Run(transfers.first(n));
    } else {
      RunRound(transfers.first(n));
    }
    transfers.remove_prefix(n);
  }
}

void UringDataPath::RunRound(absl::Span<DataTransfer* const> transfers) {
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
      const int rc = io_uring_submit(&ring_);
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
