// PeerBackend: a real vhost-user-fs back-end process for integration tests.
//
// The peers are the Debian-packaged daemons tools/peers/fetch.sh provides
// (listed in $VHOSTMIG_PEERS_DIR/peers.env, default ~/.cache/vhostmig/peers):
// the C virtiofsd (no DEVICE_STATE) and virtiofsd 1.13 (with DEVICE_STATE).
// A test starts one on a directory and a socket path, connects its front-end
// to socket_path(), and lets the destructor stop it:
//
//   auto peer = PeerBackend::Start(PeerKind::kVirtiofsd113, dir, sock);
//   if (absl::IsNotFound(peer.status())) GTEST_SKIP() << peer.status();
//   ASSERT_TRUE(peer.ok()) << peer.status();
//
// NotFound means the peer is not installed here (the test should skip, never
// pass); other errors mean it failed to start. The daemons need root.
// Not thread-safe; one object per process.
#ifndef VHOSTMIG_TESTS_PEERS_PEER_BACKEND_H_
#define VHOSTMIG_TESTS_PEERS_PEER_BACKEND_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/socket_server_process.h"

namespace vhostmig::testing {

enum class PeerKind {
  kCVirtiofsd,    // /usr/lib/qemu/virtiofsd from bookworm's qemu-system-common
  kVirtiofsd113,  // virtiofsd 1.13 (Rust) from Debian 13
};

// The executable for `kind`, from peers.env (tools/peers/peers_env.h);
// NotFound if it is not there or not executable.
absl::StatusOr<std::string> PeerPath(PeerKind kind);

class PeerBackend {
 public:
  // Starts the peer serving `shared_dir` on a new vhost-user socket at
  // `socket_path` and waits (up to `timeout`) until the socket exists.
  // `extra_args` are appended to the peer's command line.
  static absl::StatusOr<std::unique_ptr<PeerBackend>> Start(
      PeerKind kind, const std::string& shared_dir,
      const std::string& socket_path,
      const std::vector<std::string>& extra_args = {},
      absl::Duration timeout = absl::Seconds(10));

  // Stops the process (SIGTERM, then SIGKILL after a second) and reaps it.
  ~PeerBackend() = default;

  PeerBackend(const PeerBackend&) = delete;
  PeerBackend& operator=(const PeerBackend&) = delete;

  const std::string& socket_path() const { return process_->socket_path(); }
  pid_t pid() const { return process_->pid(); }
  // Where the peer's stdout and stderr go, for failure messages.
  const std::string& log_path() const { return process_->log_path(); }

  // Waits up to `timeout` for the process to exit on its own (the daemons
  // exit when the front-end disconnects) and returns its wait status;
  // DeadlineExceeded if it is still running.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout);

 private:
  explicit PeerBackend(std::unique_ptr<SocketServerProcess> process)
      : process_(std::move(process)) {}

  std::unique_ptr<SocketServerProcess> process_;
};

}  // namespace vhostmig::testing

#endif  // VHOSTMIG_TESTS_PEERS_PEER_BACKEND_H_
