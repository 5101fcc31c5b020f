// Shared pieces of the reliability tests (docs/reliability.md): our
// vhost-user-fs daemon as a separate process (so a test can kill it), and a
// host-side check of the synthetic guest's files that needs no back-end
// (so it still works after the guest's device was lost).
//
// Daemon: //fs_device:vhost-user-fs from the test's runfiles (list it in
// `data`), on a socket under the test's /tmp folder (socket paths must fit
// in 108 bytes). Like virtiofsd it exits when its front-end disconnects.
//
// Host check (FsWorkload's format, guest/fs_workload.h): after `steps`
// acknowledged steps the journal holds one record per step in order (and at
// most one more, from a step in flight when the device was lost), and every
// block holds the step that last wrote it (or that in-flight step), with a
// payload matching its checksum.
//
// Thread-safety: none (one test thread).
#ifndef VHOSTMIG_TESTS_RELIABILITY_RELIABILITY_FIXTURE_H_
#define VHOSTMIG_TESTS_RELIABILITY_RELIABILITY_FIXTURE_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/socket_server_process.h"
#include "guest/fs_workload.h"

namespace vhostmig::reliability {

class FsDaemon {
 public:
  // Starts vhost-user-fs serving `shared_dir` on `socket_path`.
  static absl::StatusOr<std::unique_ptr<FsDaemon>> Start(
      const std::string& shared_dir, const std::string& socket_path);

  const std::string& socket_path() const { return process_->socket_path(); }
  pid_t pid() const { return process_->pid(); }
  // SIGKILL, then reaps it (bounded).
  absl::Status Kill();
  // Waits (bounded) for the daemon to exit on its own; its wait status.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout) {
    return process_->WaitForExit(timeout);
  }
  // The daemon's log, for failure messages.
  std::string Log() const;

 private:
  explicit FsDaemon(std::unique_ptr<SocketServerProcess> process)
      : process_(std::move(process)) {}
  std::unique_ptr<SocketServerProcess> process_;
};

// Checks the workload's files under `shared_dir` on the host (see the file
// comment) for `steps` acknowledged steps.
absl::Status CheckWorkloadFilesOnHost(const std::string& shared_dir,
                                      const guest::FsWorkloadOptions& workload,
                                      uint64_t steps);

}  // namespace vhostmig::reliability

#endif  // VHOSTMIG_TESTS_RELIABILITY_RELIABILITY_FIXTURE_H_
