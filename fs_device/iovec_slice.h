// Byte-level access to a scatter list of host buffers (a descriptor chain's
// readable or writable part). Every function is bounded by the list: copies
// stop at its end and report how much they moved, never overrun it.
#ifndef VHOSTMIG_FS_DEVICE_IOVEC_SLICE_H_
#define VHOSTMIG_FS_DEVICE_IOVEC_SLICE_H_

#include <sys/uio.h>

#include <cstddef>
#include <vector>

#include "absl/types/span.h"

namespace vhostmig::fs {

size_t IovecsTotal(absl::Span<const iovec> iov);

// Copies up to `len` bytes starting `offset` bytes into `iov`.
size_t CopyFromIovecs(absl::Span<const iovec> iov, size_t offset, void* dst,
                      size_t len);
size_t CopyToIovecs(absl::Span<const iovec> iov, size_t offset, const void* src,
                    size_t len);

// The sub-list covering [offset, offset + len) of `iov`, clipped to its end.
std::vector<iovec> SliceIovecs(absl::Span<const iovec> iov, size_t offset,
                               size_t len);

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_IOVEC_SLICE_H_
