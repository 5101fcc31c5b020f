#include "tests/peers/peer_backend.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

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
  absl::StatusOr<std::unique_ptr<SocketServerProcess>> process =
      SocketServerProcess::Start(args, socket_path, socket_path + ".log",
                                 timeout);
  if (!process.ok()) return process.status();
  return std::unique_ptr<PeerBackend>(new PeerBackend(*std::move(process)));
}

absl::StatusOr<int> PeerBackend::WaitForExit(absl::Duration timeout) {
  return process_->WaitForExit(timeout);
}

}  // namespace vhostmig::testing
