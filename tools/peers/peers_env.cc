#include "tools/peers/peers_env.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vhostmig::peers {

std::string PeersDir() {
  if (const char* dir = std::getenv("VHOSTMIG_PEERS_DIR"); dir && *dir) {
    return dir;
  }
  const passwd* pw = getpwuid(getuid());
  return absl::StrCat(pw != nullptr ? pw->pw_dir : "/root",
                      "/.cache/vhostmig/peers");
}

absl::StatusOr<std::string> PeersEnvValue(const std::string& peers_dir,
                                          absl::string_view key) {
  const std::string env_file = peers_dir + "/peers.env";
  std::ifstream in(env_file);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "no ", env_file, " (run tools/peers/fetch.sh to provide the peers)"));
  }
  const std::string prefix = absl::StrCat(key, "=");
  for (std::string line; std::getline(in, line);) {
    if (absl::StartsWith(line, prefix)) return line.substr(prefix.size());
  }
  return absl::NotFoundError(absl::StrCat(
      key, " not in ", env_file, " (tools/peers/fetch.sh could not get it)"));
}

}  // namespace vhostmig::peers
