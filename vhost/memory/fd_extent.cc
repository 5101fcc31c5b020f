#include "vhost/memory/fd_extent.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/errno_status.h"

namespace vhostmig::vhost {

absl::Status CheckFdCovers(int fd, uint64_t offset, uint64_t len,
                           absl::string_view what) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    return LastErrnoStatus(absl::StrCat("fstat ", what));
  }
  if (!S_ISREG(st.st_mode)) return absl::OkStatus();
  const uint64_t end = offset + len;
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the fd is 0x%x bytes but the range ends at 0x%x (offset 0x%x + "
        "size 0x%x); mapping past its end would fault",
        what, st.st_size, end, offset, len));
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::vhost
