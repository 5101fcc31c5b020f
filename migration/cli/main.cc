// vhostmig: the command-line entry point. Dispatches to a subcommand.
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "migration/cli/subcommand.h"

namespace vhostmig::cli {
namespace {

constexpr Subcommand kSubcommands[] = {
    {"probe",
     "report what a vhost-user back-end offers and whether it can "
     "be migrated",
     RunProbe},
    {"bench", "run a benchmark (vhostmig bench <kind>)", RunBench},
    {"migrate", "migrate a device's guest between two agents", RunMigrate},
    {"cancel", "cancel a migration before its commit", RunCancel},
    {"status", "an agent's devices and migrations, or one migration",
     RunStatus},
    {"watch", "follow a migration with a progress bar", RunWatch},
    {"resolve", "settle a migration in doubt (source paused after commit)",
     RunResolve},
    {"drill", "cancel-and-resume drills against a running workload", RunDrill},
    {"demo", "two local agents, a guest migrated there and back, verified",
     RunDemo},
};

void Usage() {
  std::fprintf(stderr, "usage: vhostmig <subcommand> [flags]\n\n");
  for (const Subcommand& s : kSubcommands) {
    std::fprintf(stderr, "  %-10s %s\n", s.name, s.summary);
  }
}

}  // namespace
}  // namespace vhostmig::cli

int main(int argc, char** argv) {
  using vhostmig::cli::kSubcommands;
  ::signal(SIGPIPE, SIG_IGN);
  if (argc < 2 || argv[1][0] == '-') {
    vhostmig::cli::Usage();
    return 2;
  }
  for (const auto& s : kSubcommands) {
    if (std::strcmp(argv[1], s.name) != 0) continue;
    std::string program = std::string("vhostmig ") + s.name;
    std::vector<char*> args;
    args.push_back(program.data());
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    return s.run(static_cast<int>(args.size()), args.data());
  }
  std::fprintf(stderr, "vhostmig: unknown subcommand '%s'\n\n", argv[1]);
  vhostmig::cli::Usage();
  return 2;
}
