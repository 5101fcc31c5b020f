// backend_session_fuzz: a BackendServer session (vhost/backend) serving the
// virtio-fs device fed an arbitrary sequence of vhost-user messages over a
// socketpair, with real fds attached (memfds, eventfds, pipe ends) — the
// handling of requests, not only their decoding: memory tables are mapped,
// rings started with their workers, logs attached, device state saved and
// loaded on the state worker.
//
// Input:
//   [u16 LE image_len][image_len bytes]   copied to offset 0 of every memfd
//                                         (descriptor tables, rings)
//   records: [u8 fds][u8 request][u8 flags][u16 LE len][len bytes payload]
//     fds bits 0-1: how many fds (0-3); fd i's kind is bits 2+2i..3+2i:
//     0 memfd (64 KiB), 1 eventfd, 2 pipe read end, 3 pipe write end.
// Seeds: tests/fuzz/backend_seeds.py.
//
// After the last record the front-end half-closes; the server must end the
// session (ServeConnection returns) within a bound, resetting the device.
// Nothing may crash, hang, leak or touch memory outside what was mapped.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "fs_device/virtio_fs_device.h"
#include "vhost/backend/server.h"
#include "vhost/protocol/codec.h"

namespace {

using vhostmig::UniqueFd;

constexpr size_t kMemfdBytes = 64 << 10;
constexpr size_t kMaxImage = 16 << 10;
constexpr size_t kMaxRecords = 64;
constexpr size_t kMaxPayload = 512;

std::string* g_dir = nullptr;

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void Init() {
  // A state pipe whose reader went away must not kill the process.
  signal(SIGPIPE, SIG_IGN);
  const char* base = getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/backendfuzz.XXXXXX";
  Check(mkdtemp(tmpl.data()) != nullptr);
  g_dir = new std::string(tmpl);
}

UniqueFd MakeFd(int kind, const uint8_t* image, size_t image_len,
                std::vector<UniqueFd>* keep) {
  switch (kind) {
    case 0: {
      UniqueFd fd(memfd_create("fuzz-mem", MFD_CLOEXEC));
      Check(fd.valid() && ftruncate(fd.get(), kMemfdBytes) == 0);
      if (image_len > 0) {
        Check(pwrite(fd.get(), image, image_len, 0) ==
              static_cast<ssize_t>(image_len));
      }
      return fd;
    }
    case 1:
      return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    default: {
      int p[2];
      Check(pipe2(p, O_CLOEXEC) == 0);
      // Our end is closed at the end of the input (the back-end then sees
      // EOF or EPIPE); the other is sent.
      if (kind == 2) {
        keep->emplace_back(p[1]);
        return UniqueFd(p[0]);
      }
      keep->emplace_back(p[0]);
      return UniqueFd(p[1]);
    }
  }
}

// Reads and discards whatever replies are waiting (closing received fds);
// with `until_eof`, until the server closes its end (bounded).
void Drain(int sock, bool until_eof) {
  char buf[4096];
  char control[CMSG_SPACE(sizeof(int) * 8)];
  for (int idle = 0; idle < 100;) {
    if (until_eof) {
      pollfd p{sock, POLLIN, 0};
      if (poll(&p, 1, 100) == 0) {
        ++idle;
        continue;
      }
    }
    iovec iov{buf, sizeof(buf)};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n =
        recvmsg(sock, &msg, (until_eof ? 0 : MSG_DONTWAIT) | MSG_CMSG_CLOEXEC);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c != nullptr;
         c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          close(fd);
        }
      }
    }
    if (n <= 0) return;  // EOF, or nothing waiting
  }
  Check(false);  // the server neither replied nor closed for 10 s
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (g_dir == nullptr) Init();
  if (size < 2) return 0;
  size_t image_len = data[0] | (size_t{data[1]} << 8);
  image_len = std::min({image_len, kMaxImage, size - 2});
  const uint8_t* image = data + 2;
  size_t pos = 2 + image_len;

  vhostmig::fs::FsConfig config;
  config.shared_dir = *g_dir;
  auto device = vhostmig::fs::VirtioFsDevice::Create(
      config, vhostmig::fs::VirtioFsOptions{});
  Check(device.ok());
  vhostmig::vhost::BackendOptions options;
  options.log = [](const std::string&) {};
  vhostmig::vhost::BackendServer server(device->get(), options);
  int sv[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd ours(sv[0]);
  std::thread serve([&server, theirs = sv[1]] {
    (void)server.ServeConnection(UniqueFd(theirs));
  });

  std::vector<UniqueFd> keep;
  for (size_t n = 0; n < kMaxRecords && pos + 5 <= size; ++n) {
    const uint8_t fds_spec = data[pos];
    const uint32_t request = data[pos + 1];
    const uint32_t flags = data[pos + 2];
    size_t len = data[pos + 3] | (size_t{data[pos + 4]} << 8);
    pos += 5;
    len = std::min({len, kMaxPayload, size - pos});
    std::vector<UniqueFd> fds;
    std::vector<int> raw;
    for (int i = 0; i < (fds_spec & 3); ++i) {
      fds.push_back(
          MakeFd((fds_spec >> (2 + 2 * i)) & 3, image, image_len, &keep));
      raw.push_back(fds.back().get());
    }
    const absl::Status sent = vhostmig::vhost::WriteMessage(
        ours.get(), request, flags, absl::MakeConstSpan(data + pos, len), raw);
    pos += len;
    if (!sent.ok()) break;  // the server dropped the connection
    Drain(ours.get(), /*until_eof=*/false);
  }
  keep.clear();
  shutdown(ours.get(), SHUT_WR);
  Drain(ours.get(), /*until_eof=*/true);
  serve.join();
  Check(server.connections() == 1);
  return 0;
}
