// Session: the back-end's protocol state for one front-end connection and
// the handlers of every front-end request (the back-end half of
// vhost-user.rst "Front-end message types").
//
// It owns what a connection negotiates and sets up: acked features and
// protocol features, the guest memory table, the dirty log, the rings with
// their workers, and a running device-state transfer. Destroying a session
// (the front-end went away) stops every ring, waits for the state worker,
// and resets the device, so the next connection starts from scratch.
//
// Bad requests never end the session: the request is rejected with a
// REPLY_ACK error (or the error shape of its own reply), logged, counted in
// rejected(), and serving goes on. Only a failure to write on the socket is
// returned to the caller.
//
// Thread-safety: a session is driven from one thread (the connection's
// message loop); ring workers and the state worker run on their own threads
// as described in ring.h and state_transfer.h.
#ifndef VHOSTMIG_VHOST_BACKEND_SESSION_H_
#define VHOSTMIG_VHOST_BACKEND_SESSION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vhost/backend/device.h"
#include "vhost/backend/options.h"
#include "vhost/backend/ring.h"
#include "vhost/backend/state_transfer.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/protocol/features.h"
#include "vhost/protocol/message.h"

namespace vhostmig::vhost {

class Session {
 public:
  // `rejected_total`, if given, is incremented (before any error reply is
  // sent) for every rejected request, e.g. the server's counter.
  Session(Device* device, const BackendOptions* options, int socket,
          std::atomic<uint64_t>* rejected_total = nullptr);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Validates and handles one request, sending whatever reply it calls for.
  // Returns an error only if the socket failed.
  absl::Status Handle(Message request);

  // Logs a message that could not even be read whole (codec errors that
  // keep the stream in step) and counts it as rejected.
  void NoteUnreadable(const absl::Status& status);

  uint64_t rejected() const { return rejected_; }
  void CountRejected();

  // The features the back-end offers (GET_FEATURES / GET_PROTOCOL_FEATURES).
  uint64_t OfferedFeatures() const;
  uint64_t OfferedProtocolFeatures() const;

 private:
  using Reply = std::optional<Message>;

  absl::StatusOr<Reply> Dispatch(Message& m);
  absl::Status SendErrorReply(const Message& m, const absl::Status& error);
  void Log(const std::string& line) const;

  // Handler families (session_*.cc).
  absl::StatusOr<Reply> OnSetFeatures(const Message& m);
  absl::StatusOr<Reply> OnSetProtocolFeatures(const Message& m);
  absl::StatusOr<Reply> OnSetMemTable(Message& m);
  absl::StatusOr<Reply> OnAddMemReg(Message& m);
  absl::StatusOr<Reply> OnRemMemReg(const Message& m);
  absl::StatusOr<Reply> OnSetLogBase(Message& m);
  absl::StatusOr<Reply> OnSetVringNum(const Message& m);
  absl::StatusOr<Reply> OnSetVringAddr(const Message& m);
  absl::StatusOr<Reply> OnSetVringBase(const Message& m);
  absl::StatusOr<Reply> OnGetVringBase(const Message& m);
  absl::StatusOr<Reply> OnSetVringFd(Message& m);
  absl::StatusOr<Reply> OnSetVringEnable(const Message& m);
  absl::StatusOr<Reply> OnGetConfig(const Message& m);
  absl::StatusOr<Reply> OnSetConfig(const Message& m);
  absl::StatusOr<Reply> OnSetStatus(const Message& m);
  absl::StatusOr<Reply> OnSetDeviceStateFd(Message& m);
  absl::StatusOr<Reply> OnCheckDeviceState(const Message& m);

  absl::StatusOr<BackendRing*> RingFor(const Message& m, uint64_t index);
  absl::Status InstallMemory(GuestMemoryMap memory);
  // Attaches the log to every ring if logging is on, detaches it otherwise.
  void ApplyLogToRings();
  bool logging() const { return (acked_features_ & kLogAllMask) != 0; }
  // RESET_DEVICE / SET_STATUS(0): rings stopped and forgotten, features
  // cleared, device reset. Memory and log stay mapped.
  void ResetDevice();

  Device* const device_;
  const BackendOptions* const options_;
  const int socket_;
  uint64_t acked_features_ = 0;
  uint64_t acked_protocol_features_ = 0;
  uint8_t status_ = 0;
  GuestMemoryMap memory_;
  std::shared_ptr<DirtyLog> log_;
  UniqueFd log_fd_;  // SET_LOG_FD: kept, never signalled
  std::vector<std::unique_ptr<BackendRing>> rings_;
  StateTransfer state_transfer_;
  uint64_t rejected_ = 0;
  std::atomic<uint64_t>* const rejected_total_;
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_BACKEND_SESSION_H_
