// frontend_reply_fuzz: the vhost-user Frontend (vhost/frontend) talking to
// a fake back-end that answers every message with the next reply taken
// from the fuzz input — wrong request numbers, flags, sizes, payloads and
// stray fds included — while the Frontend runs a fuzz-chosen sequence of
// its methods. Replies are untrusted input: every method must return a
// value or an error, never crash, hang or leak.
//
// Input:
//   [u8 op_count][op_count op bytes]   which Frontend methods run, in order
//   reply records, used in order, one per message the fake back-end reads:
//     [u8 control][u8 request][u8 flags][u8 len][len bytes payload]
//     control bit 0: answer with the request number just received (else
//     `request`); bit 1: flags = version 1 | REPLY (else `flags` as is);
//     bits 2-3: number of eventfds attached (0-3).
//   When the records run out the fake back-end closes the connection.
// Seeds: tests/fuzz/frontend_seeds.py.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "vhost/frontend/frontend.h"
#include "vhost/protocol/codec.h"

namespace {

using vhostmig::UniqueFd;
using namespace vhostmig::vhost;  // NOLINT: fuzz driver

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

struct Replies {
  const uint8_t* data;
  size_t size;
};

void FakeBackend(UniqueFd sock, Replies replies) {
  size_t pos = 0;
  for (;;) {
    absl::StatusOr<Message> m = ReadMessage(sock.get());
    if (!m.ok() && !absl::IsInvalidArgument(m.status())) return;
    if (pos + 4 > replies.size) return;  // out of replies: hang up
    const uint8_t control = replies.data[pos];
    uint32_t request = replies.data[pos + 1];
    uint32_t flags = replies.data[pos + 2];
    size_t len = replies.data[pos + 3];
    pos += 4;
    len = std::min(len, replies.size - pos);
    if ((control & 1) && m.ok()) request = m->request;
    if (control & 2) flags = kVersion1 | kFlagReply;
    std::vector<UniqueFd> fds;
    std::vector<int> raw;
    for (int i = 0; i < ((control >> 2) & 3); ++i) {
      fds.emplace_back(eventfd(0, EFD_CLOEXEC));
      raw.push_back(fds.back().get());
    }
    if (!WriteMessage(sock.get(), request, flags,
                      absl::MakeConstSpan(replies.data + pos, len), raw)
             .ok()) {
      return;
    }
    pos += len;
  }
}

UniqueFd Memfd() {
  UniqueFd fd(memfd_create("fuzz-mem", MFD_CLOEXEC));
  Check(fd.valid() && ftruncate(fd.get(), 1 << 16) == 0);
  return fd;
}

void RunOp(Frontend& f, uint8_t op) {
  const uint32_t q = (op >> 6) & 1;
  switch (op % 30) {
    case 0:
      (void)f.GetFeatures();
      break;
    case 1:
      (void)f.SetFeatures(f.backend_features());
      break;
    case 2:
      (void)f.GetProtocolFeatures();
      break;
    case 3:
      (void)f.SetProtocolFeatures(f.backend_protocol_features());
      break;
    case 4:
      (void)f.SetOwner();
      break;
    case 5:
      (void)f.GetQueueNum();
      break;
    case 6:
      (void)f.ResetDevice();
      break;
    case 7:
      (void)f.SetStatus(0xf);
      break;
    case 8:
      (void)f.GetStatus();
      break;
    case 9: {
      UniqueFd mem = Memfd();
      VhostUserMemoryRegion r{0, 1 << 16, 0x7f0000000000, 0};
      const int fd = mem.get();
      (void)f.SetMemTable({&r, 1}, {&fd, 1});
      break;
    }
    case 10: {
      UniqueFd mem = Memfd();
      (void)f.AddMemReg({0x100000, 1 << 16, 0x7f0000100000, 0}, mem.get());
      break;
    }
    case 11:
      (void)f.RemMemReg({0x100000, 1 << 16, 0x7f0000100000, 0});
      break;
    case 12:
      (void)f.GetMaxMemSlots();
      break;
    case 13: {
      UniqueFd mem = Memfd();
      (void)f.SetLogBase(1 << 16, 0, mem.get());
      break;
    }
    case 14:
      (void)f.SetVringNum(q, 16);
      break;
    case 15: {
      VhostUserVringAddr a{};
      a.index = q;
      a.desc_user_addr = 0x7f0000000000;
      a.avail_user_addr = 0x7f0000000800;
      a.used_user_addr = 0x7f0000001000;
      (void)f.SetVringAddr(a);
      break;
    }
    case 16:
      (void)f.SetVringBase(q, 0);
      break;
    case 17:
      (void)f.GetVringBase(q);
      break;
    case 18: {
      UniqueFd e(eventfd(0, EFD_CLOEXEC));
      (void)f.SetVringKick(q, e.get());
      break;
    }
    case 19: {
      UniqueFd e(eventfd(0, EFD_CLOEXEC));
      (void)f.SetVringCall(q, e.get());
      break;
    }
    case 20:
      (void)f.SetVringEnable(q, (op & 0x80) != 0);
      break;
    case 21:
      (void)f.GetConfig(0, 40);
      break;
    case 22: {
      const uint8_t bytes[4] = {1, 2, 3, 4};
      (void)f.SetConfig(0, bytes);
      break;
    }
    case 23: {
      int p[2];
      Check(pipe2(p, O_CLOEXEC) == 0);
      UniqueFd r(p[0]), w(p[1]);
      const bool save = (op & 0x80) == 0;
      (void)f.SetDeviceStateFd(
          save ? TransferDirection::kSave : TransferDirection::kLoad,
          MigrationPhase::kStopped, save ? std::move(w) : std::move(r));
      break;
    }
    case 24:
      (void)f.CheckDeviceState();
      break;
    case 25:
      (void)f.GetInflightFd(2, 16);
      break;
    case 26:
      (void)f.PostcopyAdvise();
      break;
    case 27: {
      VhostUserShared uuid{};
      (void)f.GetSharedObject(uuid);
      break;
    }
    case 28: {
      const uint8_t session[8] = {};
      (void)f.CreateCryptoSession(session);
      break;
    }
    case 29:
      (void)f.SetVringErr(q, -1);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t ops = std::min<size_t>(data[0], size - 1);
  const uint8_t* op_bytes = data + 1;
  Replies replies{data + 1 + ops, size - 1 - ops};
  int sv[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  std::thread backend(FakeBackend, UniqueFd(sv[1]), replies);
  {
    absl::StatusOr<std::unique_ptr<Frontend>> f =
        Frontend::FromFd(UniqueFd(sv[0]));
    if (f.ok()) {
      for (size_t i = 0; i < ops; ++i) RunOp(**f, op_bytes[i]);
    }
  }  // the Frontend closes its socket: the fake back-end's read ends
  backend.join();
  return 0;
}
