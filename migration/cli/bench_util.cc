#include "migration/cli/bench_util.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "tools/peers/peers_env.h"

namespace vhostmig::cli {

std::string DefaultDaemon() {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "";
  std::string path(self, n);
  const size_t cut = path.rfind("/migration/cli/");
  if (cut == std::string::npos) return "";
  return path.substr(0, cut) + "/fs_device/vhost-user-fs";
}

std::string DefaultVirtiofsd() {
  absl::StatusOr<std::string> path =
      peers::PeersEnvValue(peers::PeersDir(), "VIRTIOFSD_RS");
  return path.ok() ? *path : "";
}

absl::Status CheckBenchBinaries(const std::string& daemon,
                                const std::string& virtiofsd) {
  if (daemon.empty() || access(daemon.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "vhost-user-fs not found at '", daemon,
        "' (bazel build //fs_device:vhost-user-fs, or pass --daemon)"));
  }
  if (!virtiofsd.empty() && access(virtiofsd.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(
        "virtiofsd not found at '", virtiofsd,
        "' (tools/peers/fetch.sh, --virtiofsd, or --no-virtiofsd)"));
  }
  return absl::OkStatus();
}

std::string LoadAvg() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace vhostmig::cli
