// Where tools/peers/fetch.sh put the real peers (the C virtiofsd, virtiofsd
// 1.13, the guest kernel) and how to look one up: fetch.sh writes
// `peers_dir`/peers.env, one KEY=VALUE line per peer it could provide
// (VIRTIOFSD_C, VIRTIOFSD_RS, GUEST_KERNEL, ...), and leaves out the ones it
// could not. The integration tests (tests/peers) and the benchmarks
// (bench/, `vhostmig bench`) both read it through here:
//
//   absl::StatusOr<std::string> rs = PeersEnvValue(PeersDir(), "VIRTIOFSD_RS");
//   if (absl::IsNotFound(rs.status())) ...  // not provided here: skip
//
// Thread-safety: free functions; the file is read afresh on every call.
#ifndef VHOSTMIG_TOOLS_PEERS_PEERS_ENV_H_
#define VHOSTMIG_TOOLS_PEERS_PEERS_ENV_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vhostmig::peers {

// The folder fetch.sh fills: $VHOSTMIG_PEERS_DIR, else the invoking user's
// ~/.cache/vhostmig/peers (from the password database, since Bazel tests run
// with a private $HOME).
std::string PeersDir();

// The value of `key` in `peers_dir`/peers.env; NotFound (saying which) when
// the file or the key is missing.
absl::StatusOr<std::string> PeersEnvValue(const std::string& peers_dir,
                                          absl::string_view key);

}  // namespace vhostmig::peers

#endif  // VHOSTMIG_TOOLS_PEERS_PEERS_ENV_H_
