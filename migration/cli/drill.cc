// `vhostmig drill --source ADDR --destination ADDR --device NAME
//  --iterations N [--cancel-at PHASE|random] [--json]`: cancel-and-resume
// drills against the running workload. Each iteration starts a migration
// that the source agent cancels when it enters the phase, then verifies
// the source (cancelled, resumed, workload checks through its open handles,
// the workload still progressing) and the destination (torn down, device
// free). Prints a summary; exits non-zero on any failure.
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "migration/agent/dashed_flags.h"
#include "migration/cli/agent_client.h"
#include "migration/cli/subcommand.h"

ABSL_FLAG(int, iterations, 3, "drill: how many cancel-and-resume drills");
ABSL_FLAG(std::string, cancel_at, "random",
          "drill: the source phase to cancel in (setup, log-start, pre-copy, "
          "stop, final-sync, save-state, check) or random");

namespace vhostmig::cli {

int RunDrill(int argc, char** argv) {
  agent::ParseDashedCommandLine(argc, argv);
  const bool json = absl::GetFlag(FLAGS_json);
  MigrateArgs args;
  args.device = absl::GetFlag(FLAGS_device);
  args.destination_peer = absl::GetFlag(FLAGS_destination_peer);
  const std::string cancel_at = absl::GetFlag(FLAGS_cancel_at);
  v1::Phase ignored;
  if (cancel_at != "random" && !ParsePhase(cancel_at, &ignored)) {
    std::fprintf(stderr,
                 "vhostmig drill: --cancel-at %s is not one of setup, "
                 "log-start, pre-copy, stop, final-sync, save-state, check, "
                 "random\n",
                 cancel_at.c_str());
    return 2;
  }
  const int iterations = absl::GetFlag(FLAGS_iterations);
  if (absl::GetFlag(FLAGS_source).empty() ||
      absl::GetFlag(FLAGS_destination).empty() || args.device.empty() ||
      iterations < 1) {
    std::fprintf(stderr,
                 "vhostmig drill: --source, --destination, --device and "
                 "--iterations >= 1 are required\n");
    return 2;
  }
  auto source = ConnectAgent(absl::GetFlag(FLAGS_source));
  if (!source.ok()) {
    std::fprintf(stderr, "vhostmig drill: %s\n",
                 std::string(source.status().message()).c_str());
    return 1;
  }
  auto destination = ConnectAgent(absl::GetFlag(FLAGS_destination));
  if (!destination.ok()) {
    std::fprintf(stderr, "vhostmig drill: %s\n",
                 std::string(destination.status().message()).c_str());
    return 1;
  }
  std::vector<DrillIteration> results =
      RunDrills(*source, *destination, args, iterations, cancel_at, !json);
  int failed = 0;
  for (const DrillIteration& it : results) failed += !it.ok;
  if (json) {
    std::vector<std::string> items;
    for (const DrillIteration& it : results) {
      items.push_back(absl::StrCat(
          "{\"iteration\":", it.number, ",\"cancel_at\":\"",
          PhaseLabel(it.cancel_at), "\",\"ok\":", it.ok ? "true" : "false",
          ",\"migration_id\":\"", it.migration_id, "\",\"total_ms\":",
          it.total_ms, ",\"steps_before\":", it.steps_before,
          ",\"steps_after\":", it.steps_after,
          ",\"failure\":", JsonQuote(it.failure), "}"));
    }
    std::printf("{\"iterations\":%d,\"failed\":%d,\"results\":[%s]}\n",
                iterations, failed, absl::StrJoin(items, ",").c_str());
  } else {
    std::printf("%d drills, %d passed, %d failed\n", iterations,
                iterations - failed, failed);
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace vhostmig::cli
