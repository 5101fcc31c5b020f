// `vhostmig bench <kind>`: the benchmarks, one file per kind (bench_*.cc),
// each listed once in the table below.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "migration/cli/subcommand.h"

namespace vhostmig::cli {
namespace {

constexpr Subcommand kBenchmarks[] = {
    {"state",
     "stopped-phase cost of a virtio-fs DEVICE_STATE transfer vs table size",
     RunBenchState},
    {"migrate",
     "end-to-end downtime of a synthetic-guest migration, ours vs virtiofsd",
     RunBenchMigrate},
    {"datapath",
     "READ/WRITE/metadata throughput of our daemon vs the virtiofsd peers",
     RunBenchDatapath},
};

void BenchUsage() {
  std::fprintf(stderr, "usage: vhostmig bench <kind> [flags]\n\n");
  for (const Subcommand& s : kBenchmarks) {
    std::fprintf(stderr, "  %-10s %s\n", s.name, s.summary);
  }
}

}  // namespace

int RunBench(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    BenchUsage();
    return 2;
  }
  for (const Subcommand& s : kBenchmarks) {
    if (std::strcmp(argv[1], s.name) != 0) continue;
    std::string program = std::string("vhostmig bench ") + s.name;
    std::vector<char*> args = {program.data()};
    for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
    return s.run(static_cast<int>(args.size()), args.data());
  }
  std::fprintf(stderr, "vhostmig bench: unknown benchmark '%s'\n\n", argv[1]);
  BenchUsage();
  return 2;
}

}  // namespace vhostmig::cli
