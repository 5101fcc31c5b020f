#include "tests/peers/peer_backend.h"

#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tools/peers/peers_env.h"

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

absl::StatusOr<std::string> PeerPath(PeerKind kind) {
  const std::string peers_dir = peers::PeersDir();
  absl::StatusOr<std::string> path =
      peers::PeersEnvValue(peers_dir, EnvKey(kind));
  if (path.ok() && access(path->c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(*path, " listed in ", peers_dir,
                                            "/peers.env is not executable"));
  }
  return path;
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
