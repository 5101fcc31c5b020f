// `vhostmig status --agent ADDR [--id ID] [--json]`: one migration's state
// and progress, or, without --id, the agent's devices and migrations.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "migration/agent/dashed_flags.h"
#include "migration/cli/agent_client.h"
#include "migration/cli/subcommand.h"

namespace vhostmig::cli {

int RunStatus(int argc, char** argv) {
  agent::ParseDashedCommandLine(argc, argv);
  const bool json = absl::GetFlag(FLAGS_json);
  auto agent = ConnectAgent(absl::GetFlag(FLAGS_agent));
  if (!agent.ok()) {
    std::fprintf(stderr, "vhostmig status: %s\n",
                 std::string(agent.status().message()).c_str());
    return 1;
  }
  const std::string id = absl::GetFlag(FLAGS_id);
  if (!id.empty()) {
    v1::StatusRequest request;
    request.set_migration_id(id);
    v1::MigrationStatus status;
    grpc::Status s = agent->stub->Status(CallContext().get(), request, &status);
    if (!s.ok()) {
      std::fprintf(stderr, "vhostmig status: %s\n", s.error_message().c_str());
      return 1;
    }
    if (json) {
      std::printf("%s\n", ToJson(status).c_str());
    } else {
      std::printf("%s  (%s, phase %s)\n%s",
                  status.role() == v1::SOURCE ? "source" : "destination",
                  status.peer().empty() ? "-" : status.peer().c_str(),
                  PhaseLabel(status.phase()),
                  DescribeMigration(status).c_str());
      if (status.state() == v1::ACTIVE) {
        std::printf("%s\n", ProgressLine(status).c_str());
      }
    }
    return 0;
  }
  v1::ListResponse list;
  grpc::Status s = agent->stub->List(CallContext().get(), {}, &list);
  if (!s.ok()) {
    std::fprintf(stderr, "vhostmig status: %s\n", s.error_message().c_str());
    return 1;
  }
  if (json) {
    std::printf("%s\n", ToJson(list).c_str());
    return 0;
  }
  std::printf("devices on %s:\n", agent->address.c_str());
  std::printf("  %-12s %-10s %-12s %-8s %s\n", "NAME", "KIND", "GUEST", "STEPS",
              "MIGRATION");
  for (const v1::DeviceInfo& d : list.devices()) {
    std::printf("  %-12s %-10s %-12s %-8llu %s\n", d.name().c_str(),
                d.kind().c_str(), v1::GuestState_Name(d.guest_state()).c_str(),
                static_cast<unsigned long long>(d.workload_steps()),
                d.migration_id().c_str());
  }
  std::printf("migrations:\n");
  for (const v1::MigrationStatus& m : list.migrations()) {
    std::printf("  %s %-11s %-8s %-16s %s\n", m.id().c_str(),
                m.role() == v1::SOURCE ? "source" : "destination",
                m.device().c_str(), StateLabel(m.state()), m.message().c_str());
  }
  return 0;
}

}  // namespace vhostmig::cli
