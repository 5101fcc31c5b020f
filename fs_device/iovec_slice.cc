#include "fs_device/iovec_slice.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace vhostmig::fs {

size_t IovecsTotal(absl::Span<const iovec> iov) {
  size_t total = 0;
  for (const iovec& v : iov) total += v.iov_len;
  return total;
}

namespace {

// Calls fn(base, n) for each piece of [offset, offset + len) in order.
template <typename Fn>
size_t ForEachPiece(absl::Span<const iovec> iov, size_t offset, size_t len,
                    Fn fn) {
  size_t done = 0;
  for (const iovec& v : iov) {
    if (done == len) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    const size_t n = std::min(v.iov_len - offset, len - done);
    fn(static_cast<uint8_t*>(v.iov_base) + offset, n, done);
    done += n;
    offset = 0;
  }
  return done;
}

}  // namespace

size_t CopyFromIovecs(absl::Span<const iovec> iov, size_t offset, void* dst,
                      size_t len) {
  auto* out = static_cast<uint8_t*>(dst);
  return ForEachPiece(iov, offset, len, [out](uint8_t* p, size_t n, size_t at) {
    std::memcpy(out + at, p, n);
  });
}

size_t CopyToIovecs(absl::Span<const iovec> iov, size_t offset, const void* src,
                    size_t len) {
  auto* in = static_cast<const uint8_t*>(src);
  return ForEachPiece(iov, offset, len, [in](uint8_t* p, size_t n, size_t at) {
    std::memcpy(p, in + at, n);
  });
}

std::vector<iovec> SliceIovecs(absl::Span<const iovec> iov, size_t offset,
                               size_t len) {
  std::vector<iovec> out;
  ForEachPiece(iov, offset, len, [&out](uint8_t* p, size_t n, size_t) {
    out.push_back(iovec{p, n});
  });
  return out;
}

}  // namespace vhostmig::fs
