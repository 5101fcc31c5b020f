// FuseRequest: one FUSE request as it arrives in a virtqueue descriptor
// chain, and the one place replies are written (virtio 1.2, 5.11.6: the
// readable part holds fuse_in_header + arguments + data, the writable part
// receives fuse_out_header + reply).
//
// Every request is untrusted. Parse() never fails: a request whose header
// is short, whose length disagrees with the chain, or whose arguments exceed
// kMaxArgBytes carries a parse error that the dispatcher replies with.
// Arguments are copied out of guest memory once (so a guest rewriting its
// buffer mid-request cannot change what was validated); WRITE data is not
// copied, it is referenced as host iovecs and moved by the data path.
//
// Replies never overflow the writable part: a reply that does not fit is
// replaced by an error reply, and a chain too short for even a
// fuse_out_header gets no reply bytes at all. Every reply method returns the
// exact byte count written, which the device reports in PushUsed so the
// dirty log covers it.
#ifndef VHOSTMIG_FS_DEVICE_FUSE_REQUEST_H_
#define VHOSTMIG_FS_DEVICE_FUSE_REQUEST_H_

#include <linux/fuse.h>
#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "fs_device/handle_table.h"

namespace vhostmig::fs {

// The two halves of a descriptor chain as host iovecs.
struct FuseChain {
  std::vector<iovec> in;   // device-readable
  std::vector<iovec> out;  // device-writable
};

// What a handler did with a request.
struct ReplyResult {
  uint32_t written = 0;   // bytes written into the chain's writable part
  bool deferred = false;  // a DataTransfer is pending; reply comes later
};

// A READ or WRITE moved directly between guest memory and a file by the
// data path (io_uring or preadv/pwritev), then completed with
// FuseRequest::CompleteTransfer.
struct DataTransfer {
  enum class Kind { kRead, kWrite };
  Kind kind = Kind::kRead;
  std::shared_ptr<OpenFile> file;  // keeps the fd open while in flight
  uint64_t offset = 0;
  std::vector<iovec> iov;    // guest memory
  int64_t result = -ENOSYS;  // bytes moved, or -errno
};

// Sequential reader over a request's copied argument bytes. Reads past the
// end fail and leave the cursor unchanged.
class ArgReader {
 public:
  ArgReader() = default;
  explicit ArgReader(absl::Span<const uint8_t> bytes) : bytes_(bytes) {}

  // Reads a fixed-size struct (trivially copyable).
  template <typename T>
  bool Read(T* out) {
    return ReadBytes(out, sizeof(T));
  }
  // Reads `n` bytes (a struct of which the guest's protocol version sends
  // only a prefix, e.g. fuse_setxattr_in before FUSE_SETXATTR_EXT).
  bool ReadBytes(void* out, size_t n);
  // Reads a NUL-terminated string; fails if no NUL occurs before the end.
  bool ReadCString(absl::string_view* out);
  // Skips to the end and returns everything left.
  absl::Span<const uint8_t> ReadRest();
  size_t remaining() const { return bytes_.size() - pos_; }
  size_t position() const { return pos_; }

 private:
  absl::Span<const uint8_t> bytes_;
  size_t pos_ = 0;
};

class FuseRequest {
 public:
  // Largest argument block copied: SETXATTR's value (XATTR_SIZE_MAX) plus a
  // name, comfortably. Only WRITE carries more, and its data is not copied.
  static constexpr size_t kMaxArgBytes = 65536 + 8192;

  // `chain` must outlive the request.
  static FuseRequest Parse(const FuseChain& chain);

  FuseRequest(FuseRequest&&) = default;
  FuseRequest& operator=(FuseRequest&&) = default;

  // 0, or the errno to reply with because the request is malformed.
  int parse_error() const { return parse_error_; }
  const fuse_in_header& header() const { return header_; }
  uint32_t opcode() const { return header_.opcode; }
  uint64_t nodeid() const { return header_.nodeid; }
  ArgReader& args() { return args_; }

  // The request's bytes after the header that were not copied (WRITE data):
  // `len` bytes starting `offset` bytes after fuse_in_header. Empty if the
  // request is shorter.
  std::vector<iovec> InData(size_t offset, size_t len) const;
  // Room for a reply payload after the fuse_out_header (0 if none).
  size_t reply_capacity() const;
  // The writable iovecs for a payload of `len` bytes after the out header.
  std::vector<iovec> ReplyPayloadIovecs(size_t len) const;

  // Reply with -err (err > 0).
  ReplyResult Error(int err);
  // Reply with success and the concatenation of `parts`.
  ReplyResult Ok(std::initializer_list<absl::Span<const uint8_t>> parts = {});
  template <typename T>
  ReplyResult OkStruct(const T& payload) {
    return Ok({AsBytes(payload)});
  }
  // FORGET, BATCH_FORGET, INTERRUPT: the protocol has no reply.
  ReplyResult NoReply() { return ReplyResult{}; }
  // Hands a data transfer to the data path; the reply is written by
  // CompleteTransfer once `transfer()->result` is set.
  ReplyResult Defer(DataTransfer transfer);
  DataTransfer* transfer() { return transfer_ ? &*transfer_ : nullptr; }
  ReplyResult CompleteTransfer();

  template <typename T>
  static absl::Span<const uint8_t> AsBytes(const T& v) {
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v),
                                     sizeof(T));
  }

 private:
  explicit FuseRequest(const FuseChain* chain) : chain_(chain) {}
  uint32_t WriteReply(int32_t error,
                      std::initializer_list<absl::Span<const uint8_t>> parts);

  const FuseChain* chain_;
  fuse_in_header header_{};
  int parse_error_ = 0;
  std::vector<uint8_t> arg_bytes_;
  ArgReader args_;
  size_t in_total_ = 0;
  size_t out_total_ = 0;
  std::optional<DataTransfer> transfer_;
};

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_FUSE_REQUEST_H_
