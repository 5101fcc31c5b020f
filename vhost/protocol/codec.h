// Reading and writing vhost-user messages on a connected AF_UNIX stream
// socket: the 12-byte header, the payload, and up to kMaxFds file
// descriptors in SCM_RIGHTS ancillary data.
//
// Framing only: ReadMessage checks what it must to keep the stream in step
// (payload size bound, fd count) and leaves per-request rules to
// validation.h. Both calls block, retry on EINTR, and handle short reads and
// writes. Received fds are close-on-exec and owned by the returned Message.
//
// Errors from ReadMessage:
//   Unavailable      the peer closed the connection at a message boundary
//                    (IsConnectionClosed() is true);
//   InvalidArgument  the whole message was consumed but is unacceptable
//                    (too many fds, oversized payload that was drained); the
//                    stream is still in step and the caller may go on;
//   DataLoss / other the stream is out of step or broken; drop the
//                    connection.
//
// Thread-safety: the functions are thread-compatible; callers serialize
// access to one socket.
#ifndef VHOSTMIG_VHOST_PROTOCOL_CODEC_H_
#define VHOSTMIG_VHOST_PROTOCOL_CODEC_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vhost/protocol/message.h"

namespace vhostmig::vhost {

absl::StatusOr<Message> ReadMessage(int socket);

// Sends `message` with its own fds (the fds stay owned by the message).
absl::Status WriteMessage(int socket, const Message& message);

// Sends a message built from parts; `fds` are borrowed (e.g. memory region
// fds the caller keeps), at most kMaxFds.
absl::Status WriteMessage(int socket, uint32_t request, uint32_t flags,
                          absl::Span<const uint8_t> payload,
                          absl::Span<const int> fds = {});

// Whether `status` is ReadMessage's "peer closed the connection".
bool IsConnectionClosed(const absl::Status& status);

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_PROTOCOL_CODEC_H_
