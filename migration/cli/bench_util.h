// Small pieces the `vhostmig bench` kinds share: where the daemons are, the
// machine's load, medians.
#ifndef VHOSTMIG_MIGRATION_CLI_BENCH_UTIL_H_
#define VHOSTMIG_MIGRATION_CLI_BENCH_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace vhostmig::cli {

// Our vhost-user-fs next to this binary in a Bazel output tree
// (bazel-bin/migration/cli/vhostmig -> bazel-bin/fs_device/vhost-user-fs);
// empty when this binary is elsewhere.
std::string DefaultDaemon();

// virtiofsd 1.13 from tools/peers/fetch.sh's peers.env; empty if absent.
std::string DefaultVirtiofsd();

// OK when `daemon` (our vhost-user-fs) is executable and `virtiofsd` is
// empty (not wanted) or executable; otherwise NotFound saying how to get it.
absl::Status CheckBenchBinaries(const std::string& daemon,
                                const std::string& virtiofsd);

// The three load averages of /proc/loadavg, space-separated.
std::string LoadAvg();

// The middle element (the upper one of an even count); 0 for none.
double Median(std::vector<double> v);

}  // namespace vhostmig::cli

#endif  // VHOSTMIG_MIGRATION_CLI_BENCH_UTIL_H_
