#include "tests/peers/peer_backend.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace vhostmig::testing {
namespace {

const char* EnvKey(PeerKind kind) {
  switch (kind) {
    case PeerKind::kCVirtiofsd:
      return "VIRTIOFSD_C";
    case PeerKind::kVirtiofsd113:
      return "VIRTIOFSD_RS";
  }
  return "";
}

std::vector<std::string> CommandLine(PeerKind kind, const std::string& binary,
                                     const std::string& shared_dir,
                                     const std::string& socket_path) {
  switch (kind) {
    case PeerKind::kCVirtiofsd:
      return {binary, "--socket-path=" + socket_path,
              "-o",   "source=" + shared_dir,
              "-o",   "cache=auto"};
    case PeerKind::kVirtiofsd113:
      return {binary, "--socket-path=" + socket_path,
              "--shared-dir=" + shared_dir, "--cache=auto"};
  }
  return {};
}

bool IsSocket(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace

std::string PeersDir() {
  if (const char* dir = std::getenv("VHOSTMIG_PEERS_DIR"); dir && *dir) {
    return dir;
  }
  const passwd* pw = getpwuid(getuid());
  std::string home = pw != nullptr ? pw->pw_dir : "/root";
  return home + "/.cache/vhostmig/peers";
}

absl::StatusOr<std::string> PeerPath(PeerKind kind) {
  const std::string env_file = PeersDir() + "/peers.env";
  std::ifstream in(env_file);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "no ", env_file, " (run tools/peers/fetch.sh to provide the peers)"));
  }
  const std::string prefix = absl::StrCat(EnvKey(kind), "=");
  for (std::string line; std::getline(in, line);) {
    if (absl::StartsWith(line, prefix)) {
      std::string path = line.substr(prefix.size());
      if (access(path.c_str(), X_OK) != 0) {
        return absl::NotFoundError(
            absl::StrCat(path, " listed in ", env_file, " is not executable"));
      }
      return path;
    }
  }
  return absl::NotFoundError(
      absl::StrCat(EnvKey(kind), " not in ", env_file,
                   " (tools/peers/fetch.sh could not get it)"));
}

absl::StatusOr<std::unique_ptr<PeerBackend>> PeerBackend::Start(
    PeerKind kind, const std::string& shared_dir,
    const std::string& socket_path, const std::vector<std::string>& extra_args,
    absl::Duration timeout) {
  absl::StatusOr<std::string> binary = PeerPath(kind);
  if (!binary.ok()) return binary.status();
  if (geteuid() != 0) {
    return absl::NotFoundError("the virtiofsd peers need root");
  }
  std::vector<std::string> args =
      CommandLine(kind, *binary, shared_dir, socket_path);
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const std::string log_path = socket_path + ".log";
  unlink(socket_path.c_str());
  pid_t pid = fork();
  if (pid < 0) {
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  auto peer =
      std::unique_ptr<PeerBackend>(new PeerBackend(pid, socket_path, log_path));
  const absl::Time deadline = absl::Now() + timeout;
  while (!IsSocket(socket_path)) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      peer->pid_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat(absl::StrJoin(args, " "), " exited with status ", status,
                       " before creating its socket; see ", log_path));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          absl::StrJoin(args, " "), " did not create ", socket_path, " within ",
          absl::FormatDuration(timeout), "; see ", log_path));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return peer;
}

absl::StatusOr<int> PeerBackend::WaitForExit(absl::Duration timeout) {
  if (pid_ < 0) return absl::FailedPreconditionError("peer already reaped");
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("peer ", pid_, " still running after ",
                       absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

PeerBackend::~PeerBackend() {
  if (pid_ < 0) return;
  kill(pid_, SIGTERM);
  if (!WaitForExit(absl::Seconds(1)).ok()) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

}  // namespace vhostmig::testing
