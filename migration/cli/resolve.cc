// `vhostmig resolve --agent SOURCE --id ID (--resume-source |
//  --destroy-source | --keep-paused)`: settles a migration IN DOUBT — the
// source committed but never learned that the destination started, so it
// stayed paused (never both running). Ask the destination first
// (`vhostmig status --agent DEST --id ID`): if it runs the guest, destroy the
// source; if it is known not to (torn down, failed, or its host is gone for
// good), resume the source.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "migration/agent/dashed_flags.h"
#include "migration/cli/agent_client.h"
#include "migration/cli/subcommand.h"

ABSL_FLAG(bool, resume_source, false,
          "resolve: the destination does not run the guest: resume the source");
ABSL_FLAG(bool, destroy_source, false,
          "resolve: the destination runs the guest: destroy the paused source");
ABSL_FLAG(bool, keep_paused, false, "resolve: leave the source paused");

namespace vhostmig::cli {

int RunResolve(int argc, char** argv) {
  agent::ParseDashedCommandLine(argc, argv);
  const std::string id = absl::GetFlag(FLAGS_id);
  const int chosen = absl::GetFlag(FLAGS_resume_source) +
                     absl::GetFlag(FLAGS_destroy_source) +
                     absl::GetFlag(FLAGS_keep_paused);
  if (id.empty() || chosen != 1) {
    std::fprintf(stderr,
                 "vhostmig resolve: --id and exactly one of --resume-source, "
                 "--destroy-source, --keep-paused are required\n");
    return 2;
  }
  auto agent = ConnectAgent(absl::GetFlag(FLAGS_agent));
  if (!agent.ok()) {
    std::fprintf(stderr, "vhostmig resolve: %s\n",
                 std::string(agent.status().message()).c_str());
    return 1;
  }
  v1::ResolveRequest request;
  request.set_migration_id(id);
  request.set_resolution(absl::GetFlag(FLAGS_resume_source) ? v1::RESUME_SOURCE
                         : absl::GetFlag(FLAGS_destroy_source)
                             ? v1::DESTROY_SOURCE
                             : v1::KEEP_PAUSED);
  v1::MigrationStatus status;
  grpc::Status s = agent->stub->Resolve(CallContext().get(), request, &status);
  if (!s.ok()) {
    std::fprintf(stderr, "vhostmig resolve: %s\n", s.error_message().c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", ToJson(status).c_str());
  } else {
    std::printf("%s", DescribeMigration(status).c_str());
  }
  return 0;
}

}  // namespace vhostmig::cli
