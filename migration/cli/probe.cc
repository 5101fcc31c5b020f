// `vhostmig probe --socket PATH [--json]`: connect to a vhost-user back-end
// as a front-end and report what it offers and whether it can be migrated.
#include "migration/probe/probe.h"

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "migration/cli/subcommand.h"
#include "vhost/frontend/frontend.h"

ABSL_FLAG(std::string, socket, "",
          "probe: path of the back-end's vhost-user unix socket");
ABSL_FLAG(bool, json, false,
          "print JSON for scripts instead of text (probe and the agent "
          "subcommands)");

namespace vhostmig::cli {

int RunProbe(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string path = absl::GetFlag(FLAGS_socket);
  if (path.empty()) {
    std::fprintf(stderr, "vhostmig probe: --socket PATH is required\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<vhost::Frontend>> frontend =
      vhost::Frontend::Connect(path);
  if (!frontend.ok()) {
    std::fprintf(stderr, "vhostmig probe: %s\n",
                 std::string(frontend.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<migration::ProbeReport> report = migration::Probe(**frontend);
  if (!report.ok()) {
    std::fprintf(stderr, "vhostmig probe: %s\n",
                 std::string(report.status().message()).c_str());
    return 1;
  }
  const std::string out = absl::GetFlag(FLAGS_json)
                              ? migration::FormatJson(*report)
                              : migration::FormatText(*report);
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace vhostmig::cli
