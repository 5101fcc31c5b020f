#include "vhost/backend/server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "vhost/backend/session.h"
#include "vhost/protocol/codec.h"

namespace vhostmig::vhost {
namespace {

// Waits until `fd` is readable or the shutdown eventfd fires. Returns true
// if `fd` is readable (or has hung up), false on shutdown.
absl::StatusOr<bool> WaitReadable(int fd, int shutdown) {
  pollfd fds[2] = {{fd, POLLIN, 0}, {shutdown, POLLIN, 0}};
  for (;;) {
    const int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoStatus("poll");
    }
    if (fds[1].revents & POLLIN) return false;
    if (fds[0].revents) return true;
  }
}

}  // namespace

BackendServer::BackendServer(Device* device, BackendOptions options)
    : device_(device),
      options_(std::move(options)),
      shutdown_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

BackendServer::~BackendServer() = default;

void BackendServer::Shutdown() {
  const uint64_t one = 1;
  while (::write(shutdown_.get(), &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

absl::Status BackendServer::Listen(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path too long (", path.size(), " bytes): ", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return LastErrnoStatus("socket");
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    return LastErrnoStatus(absl::StrCat("bind ", path));
  }
  if (::listen(fd.get(), 1) < 0) {
    return LastErrnoStatus(absl::StrCat("listen ", path));
  }
  listener_ = std::move(fd);
  return absl::OkStatus();
}

absl::Status BackendServer::Serve() {
  if (!listener_.valid()) {
    return absl::FailedPreconditionError("Serve() before Listen()");
  }
  for (;;) {
    absl::StatusOr<bool> ready = WaitReadable(listener_.get(), shutdown_.get());
    if (!ready.ok()) return ready.status();
    if (!*ready) return absl::OkStatus();
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return LastErrnoStatus("accept");
    }
    absl::Status status = ServeConnection(std::move(conn));
    if (options_.exit_on_disconnect) return status;
    // A broken connection ends that session only; wait for the next one.
  }
}

absl::Status BackendServer::ServeConnection(UniqueFd connection) {
  absl::Status result;
  {
    Session session(device_, &options_, connection.get(), &rejected_);
    for (;;) {
      absl::StatusOr<bool> ready =
          WaitReadable(connection.get(), shutdown_.get());
      if (!ready.ok()) {
        result = ready.status();
        break;
      }
      if (!*ready) break;
      absl::StatusOr<Message> message = ReadMessage(connection.get());
      if (!message.ok()) {
        if (IsConnectionClosed(message.status())) break;
        if (absl::IsInvalidArgument(message.status())) {
          // Consumed whole but unacceptable: drop it and go on.
          session.NoteUnreadable(message.status());
        } else {
          result = message.status();
          break;
        }
      } else {
        result = session.Handle(*std::move(message));
        if (!result.ok()) break;
      }
    }
    // ~Session: rings stopped, state worker joined, device reset.
  }
  connections_.fetch_add(1);
  return result;
}

}  // namespace vhostmig::vhost
