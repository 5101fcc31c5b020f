#include "vhost/protocol/codec.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/errno_status.h"
#include "base/status_macros.h"

namespace vhostmig::vhost {
namespace {

constexpr char kClosedMessage[] = "vhost-user peer closed the connection";

// A peer that announces an oversized payload is drained up to this many
// bytes so the stream stays in step; beyond it the connection is dropped.
constexpr uint64_t kMaxDrain = 1 << 20;

// Receives exactly `len` bytes (len > 0), collecting any fds that ride on
// them into `fds`. Sets *too_many_fds if fds were dropped because more than
// kMaxFds arrived. `at_boundary` makes an EOF before the first byte a clean
// close rather than a truncated message.
absl::Status RecvExact(int socket, uint8_t* buf, size_t len,
                       std::vector<UniqueFd>* fds, bool* too_many_fds,
                       bool at_boundary) {
  size_t done = 0;
  while (done < len) {
    iovec iov{buf + done, len - done};
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoStatus("vhost-user recvmsg");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
         c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (fds->size() < kMaxFds) {
          fds->emplace_back(fd);
        } else {
          ::close(fd);
          *too_many_fds = true;
        }
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) *too_many_fds = true;
    if (n == 0) {
      if (done == 0 && at_boundary) {
        return absl::UnavailableError(kClosedMessage);
      }
      return absl::DataLossError(
          absl::StrCat("vhost-user peer closed the connection mid-message (",
                       done, " of ", len, " bytes)"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

bool IsConnectionClosed(const absl::Status& status) {
  return absl::IsUnavailable(status) && status.message() == kClosedMessage;
}

absl::StatusOr<Message> ReadMessage(int socket) {
  VhostUserHeader header;
  Message m;
  bool too_many_fds = false;
  RETURN_IF_ERROR(RecvExact(socket, reinterpret_cast<uint8_t*>(&header),
                            sizeof(header), &m.fds, &too_many_fds,
                            /*at_boundary=*/true));
  m.request = header.request;
  m.flags = header.flags;
  if (header.size > kMaxPayloadSize) {
    if (header.size > kMaxDrain) {
      return absl::DataLossError(
          absl::StrCat(m.name(), ": payload size ", header.size,
                       " exceeds the limit of ", kMaxPayloadSize, " bytes"));
    }
    // Drain so the next message starts where the peer thinks it does.
    uint8_t scratch[4096];
    uint64_t left = header.size;
    while (left > 0) {
      const size_t chunk = left < sizeof(scratch) ? left : sizeof(scratch);
      RETURN_IF_ERROR(RecvExact(socket, scratch, chunk, &m.fds, &too_many_fds,
                                /*at_boundary=*/false));
      left -= chunk;
    }
    return absl::InvalidArgumentError(
        absl::StrCat(m.name(), ": payload size ", header.size,
                     " exceeds the limit of ", kMaxPayloadSize, " bytes"));
  }
  m.payload.resize(header.size);
  if (header.size > 0) {
    RETURN_IF_ERROR(RecvExact(socket, m.payload.data(), header.size, &m.fds,
                              &too_many_fds, /*at_boundary=*/false));
  }
  if (too_many_fds) {
    return absl::InvalidArgumentError(absl::StrCat(
        m.name(), ": more than ", kMaxFds, " file descriptors attached"));
  }
  return m;
}

absl::Status WriteMessage(int socket, uint32_t request, uint32_t flags,
                          absl::Span<const uint8_t> payload,
                          absl::Span<const int> fds) {
  if (fds.size() > kMaxFds) {
    return absl::InvalidArgumentError(
        absl::StrCat(RequestName(request), ": ", fds.size(),
                     " file descriptors, at most ", kMaxFds, " allowed"));
  }
  if (payload.size() > kMaxPayloadSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(RequestName(request), ": payload of ", payload.size(),
                     " bytes exceeds the limit of ", kMaxPayloadSize));
  }
  VhostUserHeader header{request, flags, static_cast<uint32_t>(payload.size())};
  const size_t total = sizeof(header) + payload.size();
  size_t sent = 0;
  bool fds_sent = fds.empty();
  while (sent < total) {
    iovec iov[2];
    int iovcnt = 0;
    if (sent < sizeof(header)) {
      iov[iovcnt++] = {reinterpret_cast<uint8_t*>(&header) + sent,
                       sizeof(header) - sent};
      if (!payload.empty()) {
        iov[iovcnt++] = {const_cast<uint8_t*>(payload.data()), payload.size()};
      }
    } else {
      const size_t off = sent - sizeof(header);
      iov[iovcnt++] = {const_cast<uint8_t*>(payload.data()) + off,
                       payload.size() - off};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = iovcnt;
    alignas(cmsghdr) char control[CMSG_SPACE(kMaxFds * sizeof(int))];
    if (!fds_sent) {
      // The fds ride on the first byte; later partial sends carry none.
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
      std::memset(control, 0, sizeof(control));
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
      std::memcpy(CMSG_DATA(c), fds.data(), fds.size() * sizeof(int));
    }
    const ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return LastErrnoStatus(
          absl::StrCat(RequestName(request), ": vhost-user sendmsg"));
    }
    fds_sent = true;
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteMessage(int socket, const Message& message) {
  int fds[kMaxFds];
  if (message.fds.size() > kMaxFds) {
    return absl::InvalidArgumentError(
        absl::StrCat(message.name(), ": ", message.fds.size(),
                     " file descriptors, at most ", kMaxFds, " allowed"));
  }
  for (size_t i = 0; i < message.fds.size(); ++i) fds[i] = message.fds[i].get();
  return WriteMessage(socket, message.request, message.flags, message.payload,
                      absl::MakeConstSpan(fds, message.fds.size()));
}

}  // namespace vhostmig::vhost
