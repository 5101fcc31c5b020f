// `vhostmig bench datapath [--json] [--seconds S] [--runs N] ...`: the
// data-path benchmark of bench/datapath_bench.h: our virtio-fs daemon, the C
// virtiofsd and virtiofsd 1.13 driven by the same driver-side client over
// real vhost-user sockets, each figure the median of N runs with its min
// and max, and our ratio to each peer. Reproduction and results:
// docs/performance.md.
//
// Daemon paths: --ours (default: the vhost-user-fs in this binary's
// runfiles, i.e. `bazel run -c opt //migration:vhostmig -- bench datapath`,
// else the one built next to it in bazel-bin), --virtiofsd-c and
// --virtiofsd-rs (default: peers.env of tools/peers/fetch.sh).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "bench/bench_peers.h"
#include "bench/datapath_bench.h"
#include "migration/cli/flag_value.h"
#include "migration/cli/subcommand.h"
#include "tools/peers/peers_env.h"

namespace vhostmig::cli {
namespace {

constexpr char kUsage[] =
    "usage: vhostmig bench datapath [flags]\n"
    "  --json               print the report as JSON\n"
    "  --seconds=S          timed window per row and run (default 2)\n"
    "  --runs=N             runs of every row per peer (default 3)\n"
    "  --dir=DIR            where the shared directory is made (default\n"
    "                       /dev/shm, a tmpfs; e.g. /tmp for a disk)\n"
    "  --file-mib=M         size of the test file (default 64)\n"
    "  --rows=a,b           only these rows (default all): randread-4k-qd1,\n"
    "                       randread-4k-qd32, randwrite-4k-qd1,\n"
    "                       randwrite-4k-qd32, seqread-1m, seqwrite-1m,\n"
    "                       metadata\n"
    "  --peers=ours,c,rs    only these back-ends (default all)\n"
    "  --thread-pool-size=N passed to both virtiofsd peers (default: theirs)\n"
    "  --ours=PATH          our daemon (default: runfiles or bazel-bin)\n"
    "  --virtiofsd-c=PATH   C virtiofsd (default: peers.env)\n"
    "  --virtiofsd-rs=PATH  virtiofsd 1.13 (default: peers.env)\n"
    "  --log-all            also measure our daemon with dirty logging on as\n"
    "                       a migration turns it on (StartLogging: LOG_ALL,\n"
    "                       log sized for guest RAM): peer ours-log, ratio\n"
    "                       ours/ours-log\n"
    "  --quiet              no progress lines on stderr\n";

bool Exists(const std::string& path) { return access(path.c_str(), X_OK) == 0; }

// The daemon built with this binary: its runfiles (bazel run, data dep),
// else bazel-bin/fs_device next to bazel-bin/migration/cli.
std::string DefaultOurs() {
  constexpr char kRel[] = "/vhostmig/fs_device/vhost-user-fs";
  if (const char* dir = std::getenv("RUNFILES_DIR"); dir && *dir) {
    if (std::string p = absl::StrCat(dir, kRel); Exists(p)) return p;
  }
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "";
  const std::string exe(self, n);
  if (std::string p = absl::StrCat(exe, ".runfiles", kRel); Exists(p)) {
    return p;
  }
  const size_t cut = exe.rfind("/migration/cli/");
  if (cut == std::string::npos) return "";
  return exe.substr(0, cut) + "/fs_device/vhost-user-fs";
}

struct Args {
  bool json = false;
  bool quiet = false;
  bool log_all = false;
  bench::DatapathBenchOptions options;
  bench::PeerPaths paths;
};

bool ParseArgs(int argc, char** argv, Args* args, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::string value;
    auto take = [&](absl::string_view name) {
      return TakeFlagValue(argc, argv, &i, name, &value);
    };
    double seconds = 0;
    int number = 0;
    if (arg == "--json") {
      args->json = true;
    } else if (arg == "--quiet") {
      args->quiet = true;
    } else if (arg == "--log-all") {
      args->log_all = true;
    } else if (take("--seconds")) {
      if (!absl::SimpleAtod(value, &seconds) || seconds <= 0) {
        *error = "--seconds wants a positive number";
        return false;
      }
      args->options.seconds = absl::Seconds(seconds);
    } else if (take("--runs")) {
      if (!absl::SimpleAtoi(value, &number) || number < 1) {
        *error = "--runs wants a positive integer";
        return false;
      }
      args->options.runs = number;
    } else if (take("--file-mib")) {
      if (!absl::SimpleAtoi(value, &number) || number < 1) {
        *error = "--file-mib wants a positive integer";
        return false;
      }
      args->options.file_bytes = static_cast<uint64_t>(number) << 20;
    } else if (take("--thread-pool-size")) {
      if (!absl::SimpleAtoi(value, &number) || number < 0) {
        *error = "--thread-pool-size wants an integer >= 0";
        return false;
      }
      args->paths.thread_pool_size = number;
    } else if (take("--dir")) {
      args->options.parent_dir = value;
    } else if (take("--rows")) {
      args->options.rows = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (take("--peers")) {
      args->options.peers = absl::StrSplit(value, ',', absl::SkipEmpty());
    } else if (take("--ours")) {
      args->paths.ours = value;
    } else if (take("--virtiofsd-c")) {
      args->paths.virtiofsd_c = value;
    } else if (take("--virtiofsd-rs")) {
      args->paths.virtiofsd_rs = value;
    } else {
      *error = absl::StrCat("unknown argument '", arg, "'");
      return false;
    }
  }
  return true;
}

}  // namespace

int RunBenchDatapath(int argc, char** argv) {
  // The client's guest RAM allocator locks a Mutex per request; Debian's
  // abseil would check each acquisition for deadlocks.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Args args;
  std::string error;
  if (!ParseArgs(argc, argv, &args, &error)) {
    std::fprintf(stderr, "vhostmig bench datapath: %s\n\n%s", error.c_str(),
                 kUsage);
    return 2;
  }
  if (args.paths.ours.empty()) args.paths.ours = DefaultOurs();
  if (!args.quiet) {
    args.options.progress = [](const std::string& line) {
      std::fprintf(stderr, "%s\n", line.c_str());
    };
  }
  std::vector<bench::BenchPeer> peers =
      bench::DescribePeers(args.paths, peers::PeersDir());
  if (args.log_all) {
    // Our daemon once more, with the client logging dirty pages; it runs
    // with the others in the same interleaved rows, so on/off share the
    // machine's load.
    auto ours = std::find_if(
        peers.begin(), peers.end(),
        [](const bench::BenchPeer& p) { return p.id == bench::PeerId::kOurs; });
    if (ours != peers.end()) {
      bench::BenchPeer logged = *ours;
      logged.key = "ours-log";
      logged.label = ours->label + " LOG_ALL";
      logged.log_all = true;
      peers.push_back(std::move(logged));
    }
    auto& wanted = args.options.peers;
    if (!wanted.empty() &&
        std::find(wanted.begin(), wanted.end(), "ours") != wanted.end()) {
      wanted.push_back("ours-log");
    }
  }
  absl::StatusOr<bench::DatapathReport> report =
      bench::RunDatapathBench(peers, args.options);
  if (!report.ok()) {
    std::fprintf(stderr, "vhostmig bench datapath: %s\n",
                 report.status().ToString().c_str());
    return 1;
  }
  const std::string out =
      args.json ? bench::FormatJson(*report) : bench::FormatText(*report);
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace vhostmig::cli
