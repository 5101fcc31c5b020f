// Rig: a front-end, a back-end serving an EchoDevice, and a synthetic guest
// (memfd guest memory and driver-side rings), wired over a socketpair, for
// integration tests of the protocol halves.
//
// Guest memory is one region at GPA 0; the front-end's virtual address of a
// GPA is GPA + kFrontendBase (any offset works: the back-end translates ring
// addresses with the memory table). Ring i lives at RingGpa(i); data buffers
// are handed out from kBufferGpa up.
//
// All waits are bounded (kWait) so a broken back-end fails a test instead of
// hanging it.
#ifndef VHOSTMIG_TESTS_VHOST_BACKEND_RIG_H_
#define VHOSTMIG_TESTS_VHOST_BACKEND_RIG_H_

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/unique_fd.h"
#include "tests/vhost/backend/echo_device.h"
#include "vhost/backend/server.h"
#include "vhost/frontend/frontend.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/protocol/message.h"
#include "vhost/virtqueue/driver_queue.h"

namespace vhostmig::vhost::testing {

inline constexpr absl::Duration kWait = absl::Seconds(20);
inline constexpr uint64_t kGuestSize = 1 << 20;
inline constexpr uint64_t kFrontendBase = 0x7f0000000000;
inline constexpr uint64_t kBufferGpa = 0x80000;
inline constexpr uint16_t kRingSize = 64;

inline uint64_t RingGpa(int i) { return 0x10000 + 0x10000 * i; }

class Rig {
 public:
  // Starts the back-end on one end of a socketpair and connects a Frontend
  // to the other.
  static absl::StatusOr<std::unique_ptr<Rig>> Create(
      BackendOptions options = {});
  ~Rig();

  EchoDevice& device() { return device_; }
  Frontend& frontend() { return *frontend_; }
  BackendServer& server() { return *server_; }
  const GuestMemoryMap& memory() const { return memory_; }

  // The usual front-end setup: SET_OWNER, SET_FEATURES (offered device bits
  // + PROTOCOL_FEATURES | extra), SET_PROTOCOL_FEATURES (REPLY_ACK,
  // LOG_SHMFD, CONFIG, DEVICE_STATE as offered), SET_MEM_TABLE.
  absl::Status Negotiate(uint64_t extra_features = 0,
                         bool protocol_features = true);
  // Lays out ring `i` in guest memory and sends NUM/BASE/ADDR/CALL/KICK
  // (which starts it); with `enable`, SET_VRING_ENABLE(1) through the
  // front-end (which then remembers it).
  absl::Status StartRing(int i, bool enable = true, uint16_t base = 0);

  // Places `data` in a fresh readable buffer plus a writable buffer of the
  // same size on ring `i` and kicks. Returns the writable buffer's GPA.
  absl::StatusOr<uint64_t> Submit(int i, const std::string& data);
  // Adds a chain without kicking.
  absl::StatusOr<uint64_t> AddWithoutKick(int i, const std::string& data);
  absl::Status Kick(int i);
  // Waits (bounded) until `count` more used elements arrived on ring `i`.
  absl::Status WaitUsed(int i, int count);
  std::string ReadGuest(uint64_t gpa, size_t len) const;

  DriverQueue& driver(int i) { return rings_[i].driver; }

  // Sends a raw message on the front-end's socket and, if it asks for one,
  // reads the reply (REPLY_ACK or inherent). Bypasses the Frontend's
  // bookkeeping (e.g. to enable rings it does not know of).
  absl::StatusOr<Message> Raw(Message m);

 private:
  Rig() = default;

  struct RingFds {
    DriverQueue driver;
    UniqueFd kick;
    UniqueFd call;
  };

  EchoDevice device_;
  std::unique_ptr<BackendServer> server_;
  std::thread server_thread_;
  absl::Status server_status_;
  std::unique_ptr<Frontend> frontend_;
  std::shared_ptr<MemoryRegion> region_;
  GuestMemoryMap memory_;
  RingFds rings_[EchoDevice::kNumQueues];
  uint64_t next_buffer_ = kBufferGpa;
};

// The page numbers of [gpa, gpa + len).
std::set<uint64_t> Pages(uint64_t gpa, uint64_t len);
// Harvests `log` into a set of page numbers.
std::set<uint64_t> DirtyPages(DirtyLog& log);

}  // namespace vhostmig::vhost::testing

#endif  // VHOSTMIG_TESTS_VHOST_BACKEND_RIG_H_
