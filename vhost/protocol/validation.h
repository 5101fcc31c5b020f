// Per-request checks of vhost-user messages, for both directions of the main
// socket: requests a back-end receives and replies a front-end receives.
// Both are untrusted input.
//
// A request passes ValidateRequest() when its header is well formed (version
// 1, no REPLY bit, no reserved bits), the request number is known, the
// payload has the size and shape the spec gives for that request
// (vhost-user.rst, "Front-end message types"), and exactly the fds the
// request carries are attached. Handlers may then decode the payload with
// PayloadAs<T>() without further size checks; value checks (ring index in
// range, features offered, ...) are the handler's.
//
// Errors are InvalidArgument and name the request and what was expected:
// "SET_VRING_NUM: payload is 4 bytes, expected 8".
#ifndef VHOSTMIG_VHOST_PROTOCOL_VALIDATION_H_
#define VHOSTMIG_VHOST_PROTOCOL_VALIDATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "vhost/protocol/message.h"

namespace vhostmig::vhost {

// Checks a front-end request as received by a back-end.
absl::Status ValidateRequest(const Message& m);

// Whether the request has a reply of its own (GET_FEATURES, GET_VRING_BASE,
// SET_DEVICE_STATE_FD, ...), independent of REPLY_ACK. SET_LOG_BASE is
// listed: with LOG_SHMFD it is answered (an empty or u64 body).
bool HasInherentReply(uint32_t request);

// Checks a reply to `request` as received by a front-end: same request
// number, version 1, REPLY set, NEED_REPLY clear, and the payload and fds
// the reply shape allows. With `ack` the reply is a REPLY_ACK (a u64 and
// no fds) to a request without a reply of its own.
absl::Status ValidateReply(uint32_t request, const Message& reply, bool ack);

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_PROTOCOL_VALIDATION_H_
