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
