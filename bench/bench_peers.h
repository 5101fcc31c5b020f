// BenchPeer: the virtio-fs back-ends a benchmark compares, as separate
// daemon processes started with comparable options: our daemon
// (//fs_device:vhost-user-fs), the C virtiofsd of QEMU 7.2 and virtiofsd
// 1.13 (both from tools/peers/fetch.sh, listed in peers.env).
//
// Comparable means: the same shared directory, the same cache policy
// (--cache=auto / -o cache=auto) and no sandbox differences that touch the
// data path. Threading differs by design and is written into each peer's
// `options` text so a report can say it: ours serves each virtqueue on its
// own thread with io_uring; both virtiofsd serve each queue on its own
// thread with blocking preadv/pwritev unless --thread-pool-size is given
// (their default is 0 = no pool).
//
// A peer that cannot run here (not installed, not root) is still listed,
// with `unavailable` saying why, so reports print "n/a" with the reason.
#ifndef VHOSTMIG_BENCH_BENCH_PEERS_H_
#define VHOSTMIG_BENCH_BENCH_PEERS_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/socket_server_process.h"

namespace vhostmig::bench {

enum class PeerId { kOurs, kCVirtiofsd, kVirtiofsd113 };

struct BenchPeer {
  PeerId id = PeerId::kOurs;
  std::string key;    // "ours", "c", "rs" (JSON keys, --peers values)
  std::string label;  // "vhost-user-fs", "C virtiofsd 7.2", "virtiofsd 1.13"
  std::string binary;
  // Empty when the peer can run; otherwise why not (printed as "n/a: ...").
  std::string unavailable;
  // Options beyond socket and directory, e.g. {"--cache=auto"}.
  std::vector<std::string> options;
  // Threading as the report should state it.
  std::string threading;
  // The client turns on dirty logging before measuring, as a migration
  // does (`vhostmig bench datapath --log-all` adds "ours-log").
  bool log_all = false;

  // The full command line serving `shared_dir` on `socket_path`.
  std::vector<std::string> CommandLine(const std::string& shared_dir,
                                       const std::string& socket_path) const;
  // Starts the daemon; its output goes to `log_path`.
  absl::StatusOr<std::unique_ptr<SocketServerProcess>> Start(
      const std::string& shared_dir, const std::string& socket_path,
      const std::string& log_path) const;
};

struct PeerPaths {
  std::string ours;          // --ours
  std::string virtiofsd_c;   // --virtiofsd-c
  std::string virtiofsd_rs;  // --virtiofsd-rs
  // --thread-pool-size for both virtiofsd peers; unset = their defaults.
  std::optional<int> thread_pool_size;
};

// The three peers in report order (ours first). Paths left empty in `paths`
// come from `peers_dir`/peers.env (tools/peers/peers_env.h); our daemon's
// path must be given.
std::vector<BenchPeer> DescribePeers(const PeerPaths& paths,
                                     const std::string& peers_dir);

}  // namespace vhostmig::bench

#endif  // VHOSTMIG_BENCH_BENCH_PEERS_H_
