// `vhostmig watch --agent ADDR --id ID [--json]`: follows a migration with
// a progress bar (phase, percent of pages, dirty rate, expected downtime)
// until it settles. Watching the source, a completed migration is confirmed
// (the paused source guest released), as `migrate --watch` does. Exit 0 for
// completed/confirmed, 1 otherwise.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "migration/agent/dashed_flags.h"
#include "migration/cli/agent_client.h"
#include "migration/cli/subcommand.h"

ABSL_FLAG(bool, confirm, true,
          "watch: confirm a completed migration on the source agent");

namespace vhostmig::cli {

int RunWatch(int argc, char** argv) {
  agent::ParseDashedCommandLine(argc, argv);
  const std::string id = absl::GetFlag(FLAGS_id);
  if (id.empty()) {
    std::fprintf(stderr, "vhostmig watch: --id is required\n");
    return 2;
  }
  const bool json = absl::GetFlag(FLAGS_json);
  auto agent = ConnectAgent(absl::GetFlag(FLAGS_agent));
  if (!agent.ok()) {
    std::fprintf(stderr, "vhostmig watch: %s\n",
                 std::string(agent.status().message()).c_str());
    return 1;
  }
  auto settled = FollowMigration(*agent, id, !json, absl::Hours(1));
  if (!settled.ok()) {
    std::fprintf(stderr, "vhostmig watch: %s\n",
                 std::string(settled.status().message()).c_str());
    return 1;
  }
  v1::MigrationStatus final_status = *settled;
  if (final_status.role() == v1::SOURCE &&
      final_status.state() == v1::COMPLETED && absl::GetFlag(FLAGS_confirm)) {
    v1::ConfirmRequest confirm;
    confirm.set_migration_id(id);
    grpc::Status s =
        agent->stub->Confirm(CallContext().get(), confirm, &final_status);
    if (!s.ok()) {
      std::fprintf(stderr, "vhostmig watch: Confirm: %s\n",
                   s.error_message().c_str());
      return 1;
    }
  }
  if (json) {
    std::printf("%s\n", ToJson(final_status).c_str());
  } else {
    std::printf("%s", DescribeMigration(final_status).c_str());
  }
  return final_status.state() == v1::COMPLETED ||
                 final_status.state() == v1::CONFIRMED
             ? 0
             : 1;
}

}  // namespace vhostmig::cli
