// `vhostmig migrate --source ADDR --destination ADDR --device NAME
//  [--downtime-limit MS] [--max-bandwidth MiB/s] [--watch] [--json]`:
// migrates the guest on device NAME from the source agent to the
// destination agent (Prepare there, Perform here). Pages and device state
// flow between the agents, never through this command. Without --watch it
// prints the migration id and returns; with --watch it shows a progress bar,
// waits for the outcome, confirms a completed migration (releasing the
// paused source guest) and exits 0 only if it completed with memory
// verified.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "migration/agent/dashed_flags.h"
#include "migration/cli/agent_client.h"
#include "migration/cli/subcommand.h"

ABSL_FLAG(uint32_t, downtime_limit, 300,
          "migrate: the longest pause (ms) the guest should see");
ABSL_FLAG(uint32_t, max_bandwidth, 0,
          "migrate: page transfer limit in MiB/s (0: unlimited)");
ABSL_FLAG(bool, watch, false,
          "migrate: follow the migration to its end with a progress bar");
ABSL_FLAG(bool, manual_commit, false,
          "migrate: hold the source at Ready until `vhostmig commit`");

namespace vhostmig::cli {

int RunMigrate(int argc, char** argv) {
  agent::ParseDashedCommandLine(argc, argv);
  const bool json = absl::GetFlag(FLAGS_json);
  MigrateArgs args;
  args.device = absl::GetFlag(FLAGS_device);
  const std::string source_address = absl::GetFlag(FLAGS_source);
  const std::string destination_address = absl::GetFlag(FLAGS_destination);
  if (source_address.empty() || destination_address.empty() ||
      args.device.empty()) {
    std::fprintf(stderr,
                 "vhostmig migrate: --source, --destination and --device are "
                 "required\n");
    return 2;
  }
  args.options.set_downtime_limit_ms(absl::GetFlag(FLAGS_downtime_limit));
  args.options.set_max_bandwidth_mib_s(absl::GetFlag(FLAGS_max_bandwidth));
  args.options.set_manual_commit(absl::GetFlag(FLAGS_manual_commit));
  args.destination_peer = absl::GetFlag(FLAGS_destination_peer);
  args.progress_bar = absl::GetFlag(FLAGS_watch) && !json;

  auto source = ConnectAgent(source_address);
  if (!source.ok()) {
    std::fprintf(stderr, "vhostmig migrate: %s\n",
                 std::string(source.status().message()).c_str());
    return 1;
  }
  auto destination = ConnectAgent(destination_address);
  if (!destination.ok()) {
    std::fprintf(stderr, "vhostmig migrate: %s\n",
                 std::string(destination.status().message()).c_str());
    return 1;
  }
  if (!absl::GetFlag(FLAGS_watch)) {
    auto started = StartMigration(*source, *destination, args);
    if (!started.ok()) {
      std::fprintf(stderr, "vhostmig migrate: %s\n",
                   std::string(started.status().message()).c_str());
      return 1;
    }
    if (json) {
      std::printf("%s\n", ToJson(*started).c_str());
    } else {
      std::printf(
          "migration %s started; follow it with\n  vhostmig watch --agent %s "
          "--id %s\n",
          started->id().c_str(), source_address.c_str(), started->id().c_str());
    }
    return 0;
  }
  auto result = Migrate(*source, *destination, args);
  if (!result.ok()) {
    std::fprintf(stderr, "vhostmig migrate: %s\n",
                 std::string(result.status().message()).c_str());
    return 1;
  }
  if (json) {
    std::printf("%s\n", ToJson(*result).c_str());
  } else {
    std::printf("%s", DescribeMigration(*result).c_str());
  }
  const bool ok =
      (result->state() == v1::CONFIRMED || result->state() == v1::COMPLETED) &&
      result->result().memory_verified();
  return ok ? 0 : 1;
}

}  // namespace vhostmig::cli
