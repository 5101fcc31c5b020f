#include "base/errno_status.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace vhostmig {

absl::Status ErrnoStatus(absl::string_view what, int err) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(what, ": ", std::strerror(err)));
}

absl::Status LastErrnoStatus(absl::string_view what) {
  return ErrnoStatus(what, errno);
}

}  // namespace vhostmig
