// `vhostmig cancel --agent ADDR --id ID`: cancels a migration on either
// agent, any time before the source commits. The source resumes where it
// stopped (no request lost or run twice); the destination tears down.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "migration/agent/dashed_flags.h"
#include "migration/cli/agent_client.h"
#include "migration/cli/subcommand.h"

namespace vhostmig::cli {

int RunCancel(int argc, char** argv) {
  agent::ParseDashedCommandLine(argc, argv);
  const std::string id = absl::GetFlag(FLAGS_id);
  if (id.empty()) {
    std::fprintf(stderr, "vhostmig cancel: --id is required\n");
    return 2;
  }
  auto agent = ConnectAgent(absl::GetFlag(FLAGS_agent));
  if (!agent.ok()) {
    std::fprintf(stderr, "vhostmig cancel: %s\n",
                 std::string(agent.status().message()).c_str());
    return 1;
  }
  v1::CancelRequest request;
  request.set_migration_id(id);
  v1::MigrationStatus status;
  grpc::Status s = agent->stub->Cancel(CallContext().get(), request, &status);
  if (!s.ok()) {
    std::fprintf(stderr, "vhostmig cancel: %s\n", s.error_message().c_str());
    return 1;
  }
  // Cancel takes effect at the coordinator's next step: wait for it.
  auto settled = AwaitSettled(*agent, id, absl::Seconds(60));
  if (!settled.ok()) {
    std::fprintf(stderr, "vhostmig cancel: %s\n",
                 std::string(settled.status().message()).c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", ToJson(*settled).c_str());
  } else {
    std::printf("%s", DescribeMigration(*settled).c_str());
  }
  return settled->state() == v1::CANCELLED ? 0 : 1;
}

}  // namespace vhostmig::cli
