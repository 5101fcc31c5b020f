#include "tests/reliability/state_pipe_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "base/errno_status.h"
#include "base/status_macros.h"
#include "vhost/protocol/codec.h"
#include "vhost/protocol/message.h"

namespace vhostmig::reliability {
namespace {

using vhost::Message;

// Every wait is bounded: a stuck peer ends the proxy, not the test.
constexpr int kPollMs = 100;
constexpr int kMaxIdlePolls = 600;  // 60 s without any traffic

absl::StatusOr<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Whether the stop eventfd fired.
bool Stopped(int stop) {
  pollfd p{stop, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StatePipeProxy>> StatePipeProxy::Start(
    const std::string& listen_path, const std::string& backend_path,
    uint64_t pass_bytes) {
  std::unique_ptr<StatePipeProxy> p(new StatePipeProxy());
  p->listen_path_ = listen_path;
  p->backend_path_ = backend_path;
  p->pass_bytes_ = pass_bytes;
  p->stop_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!p->stop_.valid()) return LastErrnoStatus("eventfd");
  p->listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!p->listener_.valid()) return LastErrnoStatus("socket");
  ASSIGN_OR_RETURN(sockaddr_un addr, Address(listen_path));
  ::unlink(listen_path.c_str());
  if (::bind(p->listener_.get(), reinterpret_cast<sockaddr*>(&addr),
             sizeof(addr)) != 0) {
    return LastErrnoStatus("bind " + listen_path);
  }
  if (::listen(p->listener_.get(), 1) != 0) return LastErrnoStatus("listen");
  p->serve_ = std::thread([raw = p.get()] { raw->Serve(); });
  return p;
}

StatePipeProxy::~StatePipeProxy() {
  const uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof(one));
  if (serve_.joinable()) serve_.join();
  if (relay_.joinable()) relay_.join();
  ::unlink(listen_path_.c_str());
}

void StatePipeProxy::Serve() {
  // Accept the front-end.
  UniqueFd client;
  for (int idle = 0; idle < kMaxIdlePolls && !client.valid(); ++idle) {
    pollfd p[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, kPollMs) < 0 && errno != EINTR) return;
    if (p[1].revents) return;
    if (p[0].revents & POLLIN) {
      client.reset(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    }
  }
  if (!client.valid()) return;
  UniqueFd backend(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  absl::StatusOr<sockaddr_un> addr = Address(backend_path_);
  if (!backend.valid() || !addr.ok() ||
      ::connect(backend.get(), reinterpret_cast<sockaddr*>(&*addr),
                sizeof(*addr)) != 0) {
    return;  // the front-end sees the connection close
  }
  for (int idle = 0; idle < kMaxIdlePolls;) {
    pollfd p[3] = {{client.get(), POLLIN, 0},
                   {backend.get(), POLLIN, 0},
                   {stop_.get(), POLLIN, 0}};
    const int n = ::poll(p, 3, kPollMs);
    if (n < 0 && errno != EINTR) return;
    if (p[2].revents) return;
    if (n <= 0) {
      ++idle;
      continue;
    }
    idle = 0;
    // Front-end -> back-end, with the state pipe replaced.
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      absl::StatusOr<Message> m = vhost::ReadMessage(client.get());
      if (!m.ok()) return;  // closing `backend` tells the back-end
      if (m->request ==
              vhost::ToWire(vhost::FrontendRequest::kSetDeviceStateFd) &&
          m->fds.size() == 1 &&
          m->payload.size() == sizeof(vhost::VhostUserDeviceStateParams) &&
          !relay_.joinable()) {
        vhost::VhostUserDeviceStateParams params;
        std::memcpy(&params, m->payload.data(), sizeof(params));
        int ends[2];
        if (::pipe2(ends, O_CLOEXEC) != 0) return;
        UniqueFd read_end(ends[0]);
        UniqueFd write_end(ends[1]);
        UniqueFd theirs = std::move(m->fds[0]);
        if (params.direction ==
            static_cast<uint32_t>(vhost::TransferDirection::kSave)) {
          m->fds[0] = std::move(write_end);
          relay_ = std::thread([this, from = std::move(read_end),
                                to = std::move(theirs)]() mutable {
            Relay(std::move(from), std::move(to));
          });
        } else {
          m->fds[0] = std::move(read_end);
          relay_ = std::thread([this, from = std::move(theirs),
                                to = std::move(write_end)]() mutable {
            Relay(std::move(from), std::move(to));
          });
        }
      }
      if (!vhost::WriteMessage(backend.get(), *m).ok()) return;
      // Our copy of a passed fd must not keep the pipe open.
      m->fds.clear();
    }
    // Back-end -> front-end, unchanged.
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      absl::StatusOr<Message> m = vhost::ReadMessage(backend.get());
      if (!m.ok()) return;
      if (!vhost::WriteMessage(client.get(), *m).ok()) return;
    }
  }
}

void StatePipeProxy::Relay(UniqueFd from, UniqueFd to) {
  // The writer's end may see EPIPE after the cut; never die of SIGPIPE.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);
  char buf[4096];
  uint64_t passed = 0;
  for (int idle = 0; idle < kMaxIdlePolls && passed < pass_bytes_;) {
    pollfd p[2] = {{from.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    const int n = ::poll(p, 2, kPollMs);
    if (n < 0 && errno != EINTR) break;
    if (p[1].revents || Stopped(stop_.get())) break;
    if (n <= 0) {
      ++idle;
      continue;
    }
    idle = 0;
    const size_t want = std::min<uint64_t>(sizeof(buf), pass_bytes_ - passed);
    const ssize_t got = ::read(from.get(), buf, want);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      relayed_ = passed;
      return;  // the whole stream fit: nothing was cut
    }
    size_t done = 0;
    while (done < static_cast<size_t>(got)) {
      const ssize_t w = ::write(to.get(), buf + done, got - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      done += w;
    }
    passed += done;
    relayed_ = passed;
    if (done < static_cast<size_t>(got)) break;
  }
  cut_ = true;
  // Closing both ends (the UniqueFds) is the fault.
}

}  // namespace vhostmig::reliability
