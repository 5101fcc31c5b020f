// MemoryTransport: one end of the ordered, flow-controlled message stream
// between a migration source and its destination (messages.h). Pages,
// device state and the handover handshake all travel on it, so their order
// is the order they were sent in.
//
// Contract for implementations (the in-process pair, in_process_transport.h;
// a gRPC bidirectional stream later, whose flow control maps to Send
// blocking):
//   - Send delivers messages in order, blocking while the peer's receive
//     window is full, for at most `timeout` (DeadlineExceeded). Unavailable
//     once either end closed.
//   - Receive returns the next message, DeadlineExceeded after `timeout`
//     without one, Unavailable once the peer closed and everything it sent
//     before closing has been received.
//   - Close ends both directions for good; it is idempotent and wakes
//     blocked Send/Receive calls of both ends.
//
// Thread-safety: Send and Receive may be called from different threads;
// Close from any thread.
#ifndef VHOSTMIG_MIGRATION_MEMORY_TRANSPORT_H_
#define VHOSTMIG_MIGRATION_MEMORY_TRANSPORT_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "migration/messages.h"

namespace vhostmig::migration {

class MemoryTransport {
 public:
  virtual ~MemoryTransport() = default;
  virtual absl::Status Send(MigrationMessage message,
                            absl::Duration timeout) = 0;
  virtual absl::StatusOr<MigrationMessage> Receive(absl::Duration timeout) = 0;
  virtual void Close() = 0;
};

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_MEMORY_TRANSPORT_H_
