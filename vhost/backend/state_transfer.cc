#include "vhost/backend/state_transfer.h"

namespace vhostmig::vhost {

void StateTransfer::Start(TransferDirection direction, UniqueFd fd) {
  Reset();
  pending_ = true;
  result_ = absl::OkStatus();
  worker_ = std::thread([this, direction, fd = std::move(fd)]() mutable {
    absl::Status status = direction == TransferDirection::kSave
                              ? device_->SaveState(fd.get())
                              : device_->LoadState(fd.get());
    fd.reset();  // EOF for the reader (save) / done with the pipe (load)
    result_ = std::move(status);
  });
}

absl::Status StateTransfer::Check() {
  if (!pending_) {
    return absl::FailedPreconditionError(
        "CHECK_DEVICE_STATE: no state transfer was started");
  }
  if (worker_.joinable()) worker_.join();
  pending_ = false;
  return result_;
}

void StateTransfer::Reset() {
  if (worker_.joinable()) worker_.join();
  pending_ = false;
}

}  // namespace vhostmig::vhost
