// StateTransfer: the back-end half of DEVICE_STATE (vhost-user.rst,
// "Migrating back-end state"). SET_DEVICE_STATE_FD starts Device::SaveState
// or Device::LoadState on a worker thread with the channel fd and the
// back-end replies at once; the front-end meanwhile reads (save) or writes
// (load) the other end until EOF. CHECK_DEVICE_STATE joins the worker and
// reports its result.
//
// The worker must not run on the message thread: the front-end only starts
// draining the pipe after it got the SET_DEVICE_STATE_FD reply, so a device
// writing more than a pipe buffer would deadlock against it.
//
// The channel fd is closed as soon as the device returns, which is the end
// of the stream for the reading side.
//
// Thread-safety: used from the message thread only.
#ifndef VHOSTMIG_VHOST_BACKEND_STATE_TRANSFER_H_
#define VHOSTMIG_VHOST_BACKEND_STATE_TRANSFER_H_

#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "base/unique_fd.h"
#include "vhost/backend/device.h"
#include "vhost/protocol/payloads.h"

namespace vhostmig::vhost {

class StateTransfer {
 public:
  explicit StateTransfer(Device* device) : device_(device) {}
  ~StateTransfer() { Reset(); }
  StateTransfer(const StateTransfer&) = delete;
  StateTransfer& operator=(const StateTransfer&) = delete;

  // Starts a transfer. A transfer still running from before is joined first
  // and its result discarded (the front-end gave up on it).
  void Start(TransferDirection direction, UniqueFd fd);

  // Waits for the transfer and returns its result. FailedPrecondition if no
  // transfer was started since the last Check/Reset.
  absl::Status Check();

  // Waits for a running transfer and forgets it.
  void Reset();

 private:
  Device* const device_;
  std::thread worker_;
  // Written by the worker, read after join.
  absl::Status result_;
  bool pending_ = false;
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_BACKEND_STATE_TRANSFER_H_
