// Conversion of errno values into absl::Status with a message that names the
// failed operation, e.g. ErrnoStatus("mmap region 2", ENOMEM).
#ifndef VHOSTMIG_BASE_ERRNO_STATUS_H_
#define VHOSTMIG_BASE_ERRNO_STATUS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vhostmig {

// Returns a non-OK status for `err` whose message is "<what>: <strerror>".
// The code follows absl::ErrnoToStatusCode (ENOENT -> NotFound, ...).
absl::Status ErrnoStatus(absl::string_view what, int err);

// Same as ErrnoStatus(what, errno).
absl::Status LastErrnoStatus(absl::string_view what);

}  // namespace vhostmig

#endif  // VHOSTMIG_BASE_ERRNO_STATUS_H_
