// The `vhostmig` CLI's subcommands. Each lives in its own file and is listed
// once in main.cc's table; adding one (migrate, bench, demo, ...) means a
// new file with a Run function and one table line.
//
// A subcommand gets argv with argv[0] set to "vhostmig <name>" and parses
// its own flags (absl flags defined in its file; the bench subcommands read
// theirs by hand, through flag_value.h, which says why).
#ifndef VHOSTMIG_MIGRATION_CLI_SUBCOMMAND_H_
#define VHOSTMIG_MIGRATION_CLI_SUBCOMMAND_H_

namespace vhostmig::cli {

struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(int argc, char** argv);
};

// probe.cc
int RunProbe(int argc, char** argv);

// bench.cc: `vhostmig bench <kind>`, dispatching to the bench_*.cc files.
int RunBench(int argc, char** argv);
// bench_state.cc: `vhostmig bench state`.
int RunBenchState(int argc, char** argv);
// bench_datapath.cc: `vhostmig bench datapath`.
int RunBenchDatapath(int argc, char** argv);
// bench_migrate.cc: `vhostmig bench migrate`.
int RunBenchMigrate(int argc, char** argv);

// The agent subcommands (agent_client.h has what they share), one file
// each: migrate.cc, cancel.cc, status.cc, watch.cc, resolve.cc, drill.cc,
// demo.cc.
int RunMigrate(int argc, char** argv);
int RunCancel(int argc, char** argv);
int RunStatus(int argc, char** argv);
int RunWatch(int argc, char** argv);
int RunResolve(int argc, char** argv);
int RunDrill(int argc, char** argv);
int RunDemo(int argc, char** argv);

}  // namespace vhostmig::cli

#endif  // VHOSTMIG_MIGRATION_CLI_SUBCOMMAND_H_
