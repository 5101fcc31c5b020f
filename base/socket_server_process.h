// SocketServerProcess: a child process that serves a unix socket, such as a
// vhost-user back-end daemon started by a test or a benchmark. Start forks
// and execs `argv` with stdout and stderr going to a log file, then waits
// until a socket at the path listens (not merely exists: a connect between
// the daemon's bind and listen is refused) or the child dies;
// the destructor stops the child (SIGTERM, SIGKILL after a second) and reaps
// it, so no daemon outlives its owner.
//
// Errors: FailedPrecondition when the child exits before creating its
// socket, DeadlineExceeded when it does not create it in time, the errno
// status of a failed fork. Not thread-safe (one owner).
#ifndef VHOSTMIG_BASE_SOCKET_SERVER_PROCESS_H_
#define VHOSTMIG_BASE_SOCKET_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace vhostmig {

class SocketServerProcess {
 public:
  // Runs argv[0] (a path) with `argv`; output goes to `log_path`. A stale
  // `socket_path` is removed first.
  static absl::StatusOr<std::unique_ptr<SocketServerProcess>> Start(
      const std::vector<std::string>& argv, const std::string& socket_path,
      const std::string& log_path, absl::Duration timeout = absl::Seconds(10));

  ~SocketServerProcess();
  SocketServerProcess(const SocketServerProcess&) = delete;
  SocketServerProcess& operator=(const SocketServerProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& socket_path() const { return socket_path_; }
  const std::string& log_path() const { return log_path_; }

  // Waits up to `timeout` for the child to exit on its own and returns its
  // wait status; DeadlineExceeded if it still runs.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout);

 private:
  SocketServerProcess(pid_t pid, std::string socket_path, std::string log_path)
      : pid_(pid),
        socket_path_(std::move(socket_path)),
        log_path_(std::move(log_path)) {}

  pid_t pid_;
  std::string socket_path_;
  std::string log_path_;
};

}  // namespace vhostmig

#endif  // VHOSTMIG_BASE_SOCKET_SERVER_PROCESS_H_
