#include "bench/bench_peers.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "tools/peers/peers_env.h"

namespace vhostmig::bench {

std::vector<std::string> BenchPeer::CommandLine(
    const std::string& shared_dir, const std::string& socket_path) const {
  std::vector<std::string> argv = {binary, "--socket-path=" + socket_path};
  if (id == PeerId::kCVirtiofsd) {
    argv.insert(argv.end(), {"-o", "source=" + shared_dir});
  } else {
    argv.push_back("--shared-dir=" + shared_dir);
  }
  argv.insert(argv.end(), options.begin(), options.end());
  return argv;
}

absl::StatusOr<std::unique_ptr<SocketServerProcess>> BenchPeer::Start(
    const std::string& shared_dir, const std::string& socket_path,
    const std::string& log_path) const {
  if (!unavailable.empty()) return absl::NotFoundError(unavailable);
  return SocketServerProcess::Start(CommandLine(shared_dir, socket_path),
                                    socket_path, log_path);
}

namespace {

// Fills `peer.binary` from `given` or peers.env and `peer.unavailable` with
// the reason it cannot run.
void Locate(BenchPeer& peer, const std::string& given,
            const std::string& peers_dir, const char* env_key) {
  peer.binary = given;
  if (peer.binary.empty() && env_key != nullptr) {
    absl::StatusOr<std::string> path = peers::PeersEnvValue(peers_dir, env_key);
    if (!path.ok()) {
      peer.unavailable = std::string(path.status().message());
      return;
    }
    peer.binary = *path;
  }
  if (peer.binary.empty()) {
    peer.unavailable = "no path given";
  } else if (access(peer.binary.c_str(), X_OK) != 0) {
    peer.unavailable = absl::StrCat(peer.binary, " is not executable");
  } else if (geteuid() != 0) {
    // The virtiofsd peers sandbox themselves in namespaces; ours needs root
    // only for other users' files, but the comparison should be equal.
    peer.unavailable = "needs root";
  }
}

}  // namespace

std::vector<BenchPeer> DescribePeers(const PeerPaths& paths,
                                     const std::string& peers_dir) {
  std::vector<BenchPeer> peers(3);
  const std::string pool =
      paths.thread_pool_size ? absl::StrCat(*paths.thread_pool_size) : "";

  BenchPeer& ours = peers[0];
  ours.id = PeerId::kOurs;
  ours.key = "ours";
  ours.label = "vhost-user-fs";
  ours.options = {"--cache=auto"};
  ours.threading =
      "one thread per virtqueue, READ/WRITE batched through "
      "io_uring (--thread-pool-size is ignored)";
  Locate(ours, paths.ours, peers_dir, nullptr);

  BenchPeer& c = peers[1];
  c.id = PeerId::kCVirtiofsd;
  c.key = "c";
  c.label = "C virtiofsd 7.2";
  c.options = {"-o", "cache=auto"};
  if (!pool.empty()) c.options.push_back("--thread-pool-size=" + pool);
  c.threading = pool.empty()
                    ? "no thread pool: each queue on its own thread (its "
                      "default --thread-pool-size=0)"
                    : absl::StrCat("thread pool of ", pool);
  Locate(c, paths.virtiofsd_c, peers_dir, "VIRTIOFSD_C");

  BenchPeer& rs = peers[2];
  rs.id = PeerId::kVirtiofsd113;
  rs.key = "rs";
  rs.label = "virtiofsd 1.13";
  rs.options = {"--cache=auto"};
  if (!pool.empty()) rs.options.push_back("--thread-pool-size=" + pool);
  rs.threading = pool.empty()
                     ? "no thread pool: each queue on its own thread (its "
                       "default --thread-pool-size=0)"
                     : absl::StrCat("thread pool of ", pool);
  Locate(rs, paths.virtiofsd_rs, peers_dir, "VIRTIOFSD_RS");
  return peers;
}

}  // namespace vhostmig::bench
