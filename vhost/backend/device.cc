#include "vhost/backend/device.h"

#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace vhostmig::vhost {

absl::StatusOr<std::vector<uint8_t>> Device::ReadConfig(uint32_t offset,
                                                        uint32_t size) {
  return absl::InvalidArgumentError(
      absl::StrCat("GET_CONFIG: device has no config space (offset ", offset,
                   ", size ", size, ")"));
}

absl::Status Device::WriteConfig(uint32_t offset,
                                 absl::Span<const uint8_t> data) {
  return absl::InvalidArgumentError(
      absl::StrCat("SET_CONFIG: device has no config space (offset ", offset,
                   ", size ", data.size(), ")"));
}

absl::Status Device::SaveState(int fd) {
  // A device without internal state sends an empty stream.
  return absl::OkStatus();
}

absl::Status Device::LoadState(int fd) {
  // Accept only an empty stream: state we cannot interpret must not be
  // silently dropped.
  char byte;
  for (;;) {
    const ssize_t n = ::read(fd, &byte, 1);
    if (n == 0) return absl::OkStatus();
    if (n > 0) {
      return absl::FailedPreconditionError(
          "device has no internal state but the stream is not empty");
    }
    if (errno != EINTR) {
      return absl::ErrnoToStatus(errno, "reading device state");
    }
  }
}

}  // namespace vhostmig::vhost
