// CheckFdCovers: before a shared mapping of a front-end's fd is trusted, the
// file must be at least as long as the range mapped. Touching a MAP_SHARED
// page past the end of its file raises SIGBUS, so a memory region or dirty
// log larger than its memfd (a buggy or hostile front-end) would kill the
// back-end at the first access instead of failing the request that set it
// up. Only regular files (memfds, hugetlbfs and /dev/shm files) have a size
// to check; other fds (devices) are left to mmap.
//
// Thread-safety: a plain function.
#ifndef VHOSTMIG_VHOST_MEMORY_FD_EXTENT_H_
#define VHOSTMIG_VHOST_MEMORY_FD_EXTENT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vhostmig::vhost {

// OK when [offset, offset + len) lies inside the file `fd` refers to (or
// `fd` is not a regular file); InvalidArgument naming `what`, the file size
// and the range otherwise. `offset + len` must not overflow.
absl::Status CheckFdCovers(int fd, uint64_t offset, uint64_t len,
                           absl::string_view what);

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_MEMORY_FD_EXTENT_H_
