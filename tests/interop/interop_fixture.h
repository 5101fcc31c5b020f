// Shared set-up for the interoperability tests: our vhost-user front-end and
// synthetic guest against the real virtio-fs back-ends (the C virtiofsd from
// QEMU 7.2 and virtiofsd 1.13; see tests/peers/peer_backend.h and
// docs/interop.md).
//
// PeerTest is a value-parametrised fixture over the peer kind. SetUp skips
// the test (GTEST_SKIP, never a silent pass) when the peer is not installed
// or the test does not run as root, and creates a private directory under
// /tmp holding the shared directory and the sockets (a unix socket path
// must fit in 108 bytes, which Bazel's TEST_TMPDIR does not guarantee).
//
// AttachGuest does what a VMM does to give a guest a vhost-user-fs device:
// guest RAM, one kick/call eventfd pair per queue, the vhost-user
// negotiation, SET_MEM_TABLE and the two rings (hiprio + one request queue),
// and the virtio-fs driver on top. FUSE_INIT is left to the test.
//
// Every wait is bounded (kTimeout); a peer that stalls fails the test.
#ifndef VHOSTMIG_TESTS_INTEROP_INTEROP_FIXTURE_H_
#define VHOSTMIG_TESTS_INTEROP_INTEROP_FIXTURE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "guest/guest_ram.h"
#include "guest/vhost_user_device.h"
#include "guest/vhost_user_transport.h"
#include "guest/virtio_fs_driver.h"
#include "tests/peers/peer_backend.h"

namespace vhostmig::interop {

using ::vhostmig::testing::PeerBackend;
using ::vhostmig::testing::PeerKind;

inline constexpr absl::Duration kTimeout = absl::Seconds(10);
inline constexpr uint16_t kQueueSize = 128;

#define INTEROP_CONCAT_INNER(a, b) a##b
#define INTEROP_CONCAT(a, b) INTEROP_CONCAT_INNER(a, b)
// Asserts that a StatusOr is OK and moves its value into `lhs`.
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(INTEROP_CONCAT(_status_or_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  ASSERT_TRUE(tmp.ok()) << tmp.status();          \
  lhs = std::move(tmp).value()
// Asserts that a Status is OK; more context may be streamed after it.
#define ASSERT_OK(expr)                                                    \
  switch (0)                                                               \
  case 0:                                                                  \
  default:                                                                 \
    if (const absl::Status interop_status = (expr); interop_status.ok()) { \
    } else                                                                 \
      FAIL() << interop_status << " "

// "CVirtiofsd" / "Virtiofsd113", for test names.
std::string PeerName(PeerKind kind);
std::string PeerParamName(const ::testing::TestParamInfo<PeerKind>& info);

// Bytes 0..n-1 of a recognisable, position-dependent pattern.
std::string Pattern(size_t n);

struct AttachOptions {
  guest::GuestRamOptions ram{.region_sizes = {32ull << 20}};
  guest::VhostUserDeviceOptions device;
  uint16_t queue_size = kQueueSize;
  absl::Duration timeout = kTimeout;
};

// The synthetic guest attached to a real back-end. Members are destroyed in
// reverse order: the driver first, then the device (closing the socket, on
// which the peers exit), then the notifiers and RAM.
struct AttachedGuest {
  std::unique_ptr<guest::GuestRam> ram;
  std::unique_ptr<guest::VhostUserTransport> transport;
  std::unique_ptr<guest::VhostUserDevice> device;
  std::unique_ptr<guest::VirtioFsDriver> driver;

  std::vector<vhost::VringLayout> Layouts() const;
};

// Connect + Configure + StartRings + driver (see the file comment).
absl::StatusOr<AttachedGuest> AttachGuest(const std::string& socket_path,
                                          const AttachOptions& options = {});

class PeerTest : public ::testing::TestWithParam<PeerKind> {
 protected:
  void SetUp() override;
  void TearDown() override;

  PeerKind kind() const { return GetParam(); }
  const std::string& shared_dir() const { return shared_dir_; }
  // Starts the peer under test (or `kind`) serving shared_dir() on a socket
  // named `name` in the private directory.
  absl::StatusOr<std::unique_ptr<PeerBackend>> StartPeer(
      absl::string_view name, const std::vector<std::string>& extra_args = {});
  absl::StatusOr<std::unique_ptr<PeerBackend>> StartPeer(
      PeerKind kind, absl::string_view name,
      const std::vector<std::string>& extra_args = {});
  void WriteSharedFile(absl::string_view name, absl::string_view contents);
  // The peer's stdout/stderr so far, for failure messages.
  static std::string PeerLog(const PeerBackend& peer);

  // Skips when `kind` is not installed or we are not root; called by SetUp
  // for the parameter, available to non-parametrised tests too.
  static std::string WhyUnavailable(PeerKind kind);

 private:
  std::string root_;
  std::string shared_dir_;
};

}  // namespace vhostmig::interop

#endif  // VHOSTMIG_TESTS_INTEROP_INTEROP_FIXTURE_H_
