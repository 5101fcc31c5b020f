#include "base/socket_server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/errno_status.h"

namespace vhostmig {
namespace {

// Whether a unix socket bound to `path` is listening. The path appears at
// bind(), before listen(): a connect in between is refused, so the file
// alone is not enough. /proc/net/unix flags listening sockets with
// __SO_ACCEPTCON (0x10000).
bool IsListening(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string num, refcount, protocol, flags, type, state, inode, where;
    fields >> num >> refcount >> protocol >> flags >> type >> state >> inode;
    if (!(fields >> where) || where != path) continue;
    if (std::strtoul(flags.c_str(), nullptr, 16) & 0x10000) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SocketServerProcess>> SocketServerProcess::Start(
    const std::vector<std::string>& args, const std::string& socket_path,
    const std::string& log_path, absl::Duration timeout) {
  if (args.empty()) return absl::InvalidArgumentError("empty command line");
  // Built before fork: the child only calls async-signal-safe functions.
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  unlink(socket_path.c_str());
  const pid_t pid = fork();
  if (pid < 0) return LastErrnoStatus("fork");
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  auto child = std::unique_ptr<SocketServerProcess>(
      new SocketServerProcess(pid, socket_path, log_path));
  const absl::Time deadline = absl::Now() + timeout;
  while (!IsListening(socket_path)) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      child->pid_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat(absl::StrJoin(args, " "), " exited with status ", status,
                       " before creating its socket; see ", log_path));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          absl::StrJoin(args, " "), " did not create ", socket_path, " within ",
          absl::FormatDuration(timeout), "; see ", log_path));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return child;
}

absl::StatusOr<int> SocketServerProcess::WaitForExit(absl::Duration timeout) {
  if (pid_ < 0) return absl::FailedPreconditionError("child already reaped");
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("child ", pid_, " still running after ",
                       absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

SocketServerProcess::~SocketServerProcess() {
  if (pid_ < 0) return;
  kill(pid_, SIGTERM);
  if (!WaitForExit(absl::Seconds(1)).ok()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

}  // namespace vhostmig
