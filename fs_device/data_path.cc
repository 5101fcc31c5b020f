#include "fs_device/data_path.h"

#include <sys/uio.h>

#include <cerrno>

#include "fs_device/uring_data_path.h"

namespace vhostmig::fs {

void SyncDataPath::RunOne(DataTransfer& t) {
  const int fd = t.file->fd.get();
  const int cnt = static_cast<int>(t.iov.size());
  ssize_t n;
  do {
    n = t.kind == DataTransfer::Kind::kRead
            ? preadv(fd, t.iov.data(), cnt, static_cast<off_t>(t.offset))
            : pwritev(fd, t.iov.data(), cnt, static_cast<off_t>(t.offset));
  } while (n < 0 && errno == EINTR);
  t.result = n < 0 ? -errno : n;
}

void SyncDataPath::Run(absl::Span<DataTransfer* const> transfers) {
  for (DataTransfer* t : transfers) RunOne(*t);
}

std::unique_ptr<DataPath> MakeDataPath(bool prefer_io_uring) {
  if (prefer_io_uring) {
    auto uring = UringDataPath::Create();
    if (uring.ok()) return *std::move(uring);
  }
  return std::make_unique<SyncDataPath>();
}

}  // namespace vhostmig::fs
