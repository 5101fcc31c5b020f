// `vhostmig bench migrate`: end-to-end downtime of a live migration of the
// synthetic guest, with our vhost-user-fs and with virtiofsd 1.13 as the
// back-end, in the same run.
//
// Per run and back-end: two daemon processes (source and destination) serve
// one fresh shared directory; the synthetic guest (--guest-mib of RAM in
// three memfd regions with holes) attaches to the source, runs its
// checksummed file workload a few steps, looks up --inodes files of a tree
// the benchmark created and opens every tenth (the device state the
// back-end must carry), then keeps running the workload on its vCPU
// while the coordinator (migration/source_migration.h, destination_
// migration.h, in-process transport) migrates it to an incoming guest on
// the destination daemon. Back-ends alternate within each run, so a change
// of the machine's load spreads over both.
//
// Timestamps come from the coordinators' own progress events plus two
// wrappers around the VMM interface:
//
//   downtime   source PauseGuest called -> destination ResumeGuest returned
//              (device started; the vCPU may run), split into
//     stop     pause the vCPU, SET_VRING_ENABLE(0), GET_VRING_BASE
//     sync     final harvest, last dirty pages, ring bases, guest state
//     state    SET_DEVICE_STATE_FD(save) -> the stream read to EOF and
//              shipped (the destination loads it as it arrives)
//     check    CHECK_DEVICE_STATE on the source, then the destination's
//              CHECK and Ready
//     start    Commit -> destination features, memory table, rings, vCPU
//   total      Setup entered -> destination ResumeGuest returned
//
// Every figure comes from a migration that verified: destination RAM equals
// the paused source's byte for byte (hashes), then the workload on the
// destination reads back every block, the journal and its page cache
// through the handles opened before the migration. A failed or unverified
// run is an error, not a figure.
#include <fcntl.h>
#include <linux/fuse.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/socket_server_process.h"
#include "base/status_macros.h"
#include "guest/synthetic_guest.h"
#include "migration/cli/bench_util.h"
#include "migration/cli/flag_value.h"
#include "migration/cli/subcommand.h"
#include "migration/destination_migration.h"
#include "migration/in_process_transport.h"
#include "migration/source_migration.h"
#include "migration/synthetic_vmm.h"

namespace vhostmig::cli {
namespace {

using migration::DestinationPhase;
using migration::DestinationProgress;
using migration::SourcePhase;
using migration::SourceProgress;

struct Options {
  int runs = 5;
  bool json = false;
  uint64_t guest_mib = 256;
  uint64_t warmup_steps = 16;
  uint64_t inodes = 1000;  // extra files the guest looks up, 10% opened
  int64_t budget_ms = 300;
  std::string dir = "/dev/shm";  // where the shared directories go
  std::string daemon;            // our vhost-user-fs
  std::string virtiofsd;         // virtiofsd 1.13; empty: skip
};

struct Backend {
  std::string name;
  std::vector<std::string> argv;  // without --socket-path / --shared-dir
};

// Phase split of one migration, milliseconds.
struct RunResult {
  double downtime = 0, stop = 0, sync = 0, state = 0, check = 0, start = 0;
  double total = 0;
  uint32_t rounds = 0;
  uint64_t pages = 0;
  uint64_t final_pages = 0;  // pages sent while the guest was paused
  uint64_t state_bytes = 0;
  uint64_t steps = 0;  // workload steps the source ran before the pause
};

constexpr const char* kUsage =
    "usage: vhostmig bench migrate [--runs R] [--json] [--guest-mib M] "
    "[--inodes N] "
    "[--downtime-budget-ms B] [--dir DIR] [--daemon PATH] "
    "[--virtiofsd PATH | --no-virtiofsd]";

absl::StatusOr<Options> ParseOptions(int argc, char** argv) {
  Options o;
  o.daemon = DefaultDaemon();
  o.virtiofsd = DefaultVirtiofsd();
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::string value;
    auto take = [&](absl::string_view name) {
      return TakeFlagValue(argc, argv, &i, name, &value);
    };
    if (arg == "--json") {
      o.json = true;
    } else if (arg == "--no-virtiofsd") {
      o.virtiofsd.clear();
    } else if (arg == "--help" || arg == "-h") {
      return absl::InvalidArgumentError(kUsage);
    } else if (take("--runs")) {
      if (!absl::SimpleAtoi(value, &o.runs) || o.runs < 1) {
        return absl::InvalidArgumentError("--runs must be >= 1");
      }
    } else if (take("--guest-mib")) {
      if (!absl::SimpleAtoi(value, &o.guest_mib) || o.guest_mib < 8 ||
          o.guest_mib > (64 << 10)) {
        return absl::InvalidArgumentError("--guest-mib must be 8..65536");
      }
    } else if (take("--inodes")) {
      if (!absl::SimpleAtoi(value, &o.inodes) || o.inodes > 1000000) {
        return absl::InvalidArgumentError("--inodes must be 0..1000000");
      }
    } else if (take("--downtime-budget-ms")) {
      if (!absl::SimpleAtoi(value, &o.budget_ms) || o.budget_ms < 1) {
        return absl::InvalidArgumentError("--downtime-budget-ms must be >= 1");
      }
    } else if (take("--dir")) {
      o.dir = value;
    } else if (take("--daemon")) {
      o.daemon = value;
    } else if (take("--virtiofsd")) {
      o.virtiofsd = value;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown argument '", arg, "'; ", kUsage));
    }
  }
  RETURN_IF_ERROR(CheckBenchBinaries(o.daemon, o.virtiofsd));
  return o;
}

// When each phase was entered, on either side; written by the coordinators'
// threads, read after both finished.
class Clock {
 public:
  void Mark(int key) {
    absl::MutexLock lock(&mu_);
    if (!at_[key].has_value()) at_[key] = absl::Now();
  }
  absl::StatusOr<absl::Time> At(int key, const char* what) const {
    absl::MutexLock lock(&mu_);
    if (!at_[key].has_value()) {
      return absl::InternalError(absl::StrCat("no timestamp for ", what));
    }
    return *at_[key];
  }

  // Keys: source phases, then destination phases, then the VMM calls.
  static int Key(SourcePhase p) { return static_cast<int>(p); }
  static int Key(DestinationPhase p) { return 16 + static_cast<int>(p); }
  static constexpr int kPaused = 32;   // PauseGuest called
  static constexpr int kResumed = 33;  // destination ResumeGuest returned

 private:
  mutable absl::Mutex mu_;
  std::optional<absl::Time> at_[34] ABSL_GUARDED_BY(mu_);
};

class TimedSourceVmm : public migration::SyntheticSourceVmm {
 public:
  TimedSourceVmm(guest::SyntheticGuest* guest, Clock* clock)
      : SyntheticSourceVmm(guest), clock_(clock) {}
  absl::Status PauseGuest() override {
    clock_->Mark(Clock::kPaused);
    return SyntheticSourceVmm::PauseGuest();
  }

 private:
  Clock* clock_;
};

class TimedDestinationVmm : public migration::SyntheticDestinationVmm {
 public:
  TimedDestinationVmm(std::unique_ptr<guest::SyntheticGuest> guest,
                      Clock* clock)
      : SyntheticDestinationVmm(std::move(guest), /*start_vcpu=*/false),
        clock_(clock) {}
  absl::Status ResumeGuest() override {
    absl::Status s = SyntheticDestinationVmm::ResumeGuest();
    clock_->Mark(Clock::kResumed);
    return s;
  }

 private:
  Clock* clock_;
};

double Ms(absl::Time from, absl::Time to) {
  return absl::ToDoubleMilliseconds(to - from);
}

absl::StatusOr<RunResult> RunOnce(const Backend& b, const Options& o,
                                  const std::string& tag) {
  char tmpl[4096];
  std::snprintf(tmpl, sizeof(tmpl), "%s/vhostmig-bm-XXXXXX", o.dir.c_str());
  if (mkdtemp(tmpl) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp in ", o.dir, " failed"));
  }
  const std::string shared = tmpl;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{shared};
  // The entries the guest will have looked up (and partly opened) when the
  // migration starts: what the back-end's device state carries.
  if (o.inodes > 0) {
    const std::string tree = shared + "/tree";
    if (mkdir(tree.c_str(), 0755) != 0) {
      return absl::InternalError(absl::StrCat("mkdir ", tree, " failed"));
    }
    for (uint64_t i = 0; i < o.inodes; ++i) {
      const std::string path = absl::StrCat(tree, "/f", i);
      const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) {
        return absl::InternalError(absl::StrCat("creating ", path, " failed"));
      }
      close(fd);
    }
  }
  const std::string sock_base =
      absl::StrCat("/tmp/vhostmig-bm-", getpid(), "-", tag);
  std::vector<std::unique_ptr<SocketServerProcess>> daemons;
  for (const char* side : {"-src.sock", "-dst.sock"}) {
    const std::string socket = sock_base + side;
    std::vector<std::string> argv = b.argv;
    argv.insert(argv.begin() + 1,
                {"--socket-path=" + socket, "--shared-dir=" + shared});
    ASSIGN_OR_RETURN(auto p,
                     SocketServerProcess::Start(argv, socket, socket + ".log",
                                                absl::Seconds(20)));
    daemons.push_back(std::move(p));
  }

  guest::SyntheticGuestOptions g;
  const uint64_t mib = 1ull << 20;
  g.ram.region_sizes = {o.guest_mib / 2 * mib, o.guest_mib / 4 * mib,
                        o.guest_mib / 4 * mib};
  ASSIGN_OR_RETURN(auto source_guest,
                   guest::SyntheticGuest::Create(daemons[0]->socket_path(), g));
  RETURN_IF_ERROR(source_guest->RunSteps(o.warmup_steps));
  if (o.inodes > 0) {
    guest::VirtioFsDriver& d = source_guest->driver();
    ASSIGN_OR_RETURN(fuse_entry_out dir, d.Lookup(FUSE_ROOT_ID, "tree"));
    for (uint64_t i = 0; i < o.inodes; ++i) {
      ASSIGN_OR_RETURN(fuse_entry_out e,
                       d.Lookup(dir.nodeid, absl::StrCat("f", i)));
      if (i % 10 == 0) RETURN_IF_ERROR(d.Open(e.nodeid, O_RDONLY).status());
    }
  }
  RETURN_IF_ERROR(source_guest->StartVcpu());
  ASSIGN_OR_RETURN(auto incoming, guest::SyntheticGuest::CreateIncoming(
                                      daemons[1]->socket_path(), g));

  Clock clock;
  TimedSourceVmm source_vmm(source_guest.get(), &clock);
  TimedDestinationVmm destination_vmm(std::move(incoming), &clock);
  auto ends = migration::InProcessTransport::CreatePair(8ull << 20);

  migration::DestinationOptions dopt;
  dopt.observer = [&](const DestinationProgress& p) {
    clock.Mark(Clock::Key(p.phase));
  };
  uint64_t pages_at_stop = 0;
  SourceProgress last;
  migration::SourceOptions sopt;
  sopt.downtime_budget = absl::Milliseconds(o.budget_ms);
  sopt.observer = [&](const SourceProgress& p) {
    clock.Mark(Clock::Key(p.phase));
    if (p.phase == SourcePhase::kStop && pages_at_stop == 0) {
      pages_at_stop = p.pages_sent;
    }
    last = p;
  };
  migration::SourceMigration source(&source_vmm, ends.first.get(), sopt);
  migration::DestinationMigration destination(&destination_vmm,
                                              ends.second.get(), dopt);
  absl::Status destination_status;
  std::thread destination_thread(
      [&] { destination_status = destination.Run(); });
  const absl::Status source_status = source.Run();
  destination_thread.join();
  if (!source_status.ok()) {
    return absl::Status(source_status.code(),
                        absl::StrCat("source: ", source_status.message()));
  }
  if (!destination_status.ok()) {
    return absl::Status(
        destination_status.code(),
        absl::StrCat("destination: ", destination_status.message()));
  }

  // Verify before reporting anything.
  RunResult r;
  r.steps = source_guest->workload().counts().steps;
  // The destination's vCPU has not run yet (ResumeGuest ended the downtime
  // with the device started; the vCPU thread starts here, after the hash):
  // both guests are still paused at the same point.
  guest::SyntheticGuest* arrived = destination_vmm.guest();
  if (arrived->HashMemory() != source_guest->HashMemory()) {
    return absl::DataLossError(
        "destination memory differs from the paused source's");
  }
  RETURN_IF_ERROR(arrived->StartVcpu());
  absl::SleepFor(absl::Milliseconds(20));
  RETURN_IF_ERROR(arrived->Pause());
  if (arrived->workload().counts().steps < r.steps) {
    return absl::DataLossError("the workload went back in time");
  }
  RETURN_IF_ERROR(arrived->workload().VerifyAll());
  RETURN_IF_ERROR(arrived->StopVcpu());

  ASSIGN_OR_RETURN(absl::Time setup,
                   clock.At(Clock::Key(SourcePhase::kSetup), "Setup"));
  ASSIGN_OR_RETURN(absl::Time paused, clock.At(Clock::kPaused, "PauseGuest"));
  ASSIGN_OR_RETURN(absl::Time sync,
                   clock.At(Clock::Key(SourcePhase::kFinalSync), "FinalSync"));
  ASSIGN_OR_RETURN(absl::Time save,
                   clock.At(Clock::Key(SourcePhase::kSaveState), "SaveState"));
  ASSIGN_OR_RETURN(absl::Time check,
                   clock.At(Clock::Key(SourcePhase::kCheck), "Check"));
  ASSIGN_OR_RETURN(absl::Time handover,
                   clock.At(Clock::Key(SourcePhase::kHandover), "Handover"));
  ASSIGN_OR_RETURN(absl::Time resumed,
                   clock.At(Clock::kResumed, "ResumeGuest"));
  r.downtime = Ms(paused, resumed);
  r.stop = Ms(paused, sync);
  r.sync = Ms(sync, save);
  r.state = Ms(save, check);
  r.check = Ms(check, handover);
  r.start = Ms(handover, resumed);
  r.total = Ms(setup, resumed);
  r.rounds = last.round;
  r.pages = last.pages_sent;
  r.final_pages = last.pages_sent - pages_at_stop;
  r.state_bytes = last.state_bytes;

  for (const auto& d : daemons) {
    unlink((d->socket_path() + ".log").c_str());
  }
  return r;
}

}  // namespace

int RunBenchMigrate(int argc, char** argv) {
  absl::StatusOr<Options> parsed = ParseOptions(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "vhostmig bench migrate: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  const Options& o = *parsed;
  if (geteuid() != 0 && !o.virtiofsd.empty()) {
    std::fprintf(stderr,
                 "vhostmig bench migrate: virtiofsd needs root (or pass "
                 "--no-virtiofsd)\n");
    return 2;
  }
  // A daemon that exits mid-run must not kill the benchmark with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  std::vector<Backend> backends = {
      {"vhost-user-fs", {o.daemon, "--cache=auto"}}};
  if (!o.virtiofsd.empty()) {
    backends.push_back({"virtiofsd-1.13", {o.virtiofsd, "--cache=auto"}});
  }
  const std::string load_before = LoadAvg();
  std::vector<std::vector<RunResult>> results(backends.size());
  int status = 0;
  for (int run = 0; run < o.runs; ++run) {
    for (size_t k = 0; k < backends.size(); ++k) {
      // Alternate which back-end goes first.
      const size_t i = (k + run) % backends.size();
      const Backend& b = backends[i];
      absl::StatusOr<RunResult> res = RunOnce(b, o, absl::StrCat(run, "-", i));
      if (!res.ok()) {
        std::fprintf(stderr, "vhostmig bench migrate: %s, run %d: %s\n",
                     b.name.c_str(), run,
                     std::string(res.status().message()).c_str());
        status = 1;
        continue;
      }
      if (!o.json) {
        std::fprintf(stderr,
                     "  %s run %d: downtime %.2f ms (stop %.2f, sync %.2f, "
                     "state %.2f, check %.2f, start %.2f), total %.0f ms, "
                     "%u rounds, %llu state bytes\n",
                     b.name.c_str(), run, res->downtime, res->stop, res->sync,
                     res->state, res->check, res->start, res->total,
                     res->rounds,
                     static_cast<unsigned long long>(res->state_bytes));
      }
      results[i].push_back(*res);
    }
  }
  const std::string load_after = LoadAvg();

  auto median = [](const std::vector<RunResult>& rs, double RunResult::*f) {
    std::vector<double> v;
    for (const RunResult& r : rs) v.push_back(r.*f);
    return Median(v);
  };
  auto range = [](const std::vector<RunResult>& rs, double RunResult::*f) {
    double lo = 1e300, hi = 0;
    for (const RunResult& r : rs) {
      lo = std::min(lo, r.*f);
      hi = std::max(hi, r.*f);
    }
    return std::make_pair(lo, hi);
  };
  auto median_u = [](const std::vector<RunResult>& rs, auto RunResult::*f) {
    std::vector<double> v;
    for (const RunResult& r : rs) v.push_back(static_cast<double>(r.*f));
    return Median(v);
  };

  if (o.json) {
    std::string json = absl::StrCat(
        "{\"command\": \"vhostmig bench migrate\", \"nproc\": ",
        std::thread::hardware_concurrency(), ", \"loadavg_before\": \"",
        load_before, "\", \"loadavg_after\": \"", load_after,
        "\", \"guest_mib\": ", o.guest_mib, ", \"inodes\": ", o.inodes,
        ", \"runs\": ", o.runs, ", \"results\": [");
    for (size_t i = 0; i < backends.size(); ++i) {
      const auto& rs = results[i];
      std::string downtimes = "[";
      for (size_t j = 0; j < rs.size(); ++j) {
        absl::StrAppendFormat(&downtimes, "%s%.3f", j ? ", " : "",
                              rs[j].downtime);
      }
      downtimes += "]";
      absl::StrAppend(
          &json, i ? ", " : "", "{\"backend\": \"", backends[i].name,
          "\", \"runs_ok\": ", rs.size(),
          absl::StrFormat(
              ", \"downtime_ms\": %.3f, \"stop_ms\": %.3f, \"sync_ms\": "
              "%.3f, \"state_ms\": %.3f, \"check_ms\": %.3f, \"start_ms\": "
              "%.3f, \"total_ms\": %.1f, \"rounds\": %.0f, \"pages\": %.0f, "
              "\"final_pages\": %.0f, \"state_bytes\": %.0f",
              median(rs, &RunResult::downtime), median(rs, &RunResult::stop),
              median(rs, &RunResult::sync), median(rs, &RunResult::state),
              median(rs, &RunResult::check), median(rs, &RunResult::start),
              median(rs, &RunResult::total), median_u(rs, &RunResult::rounds),
              median_u(rs, &RunResult::pages),
              median_u(rs, &RunResult::final_pages),
              median_u(rs, &RunResult::state_bytes)),
          ", \"downtime_ms_runs\": ", downtimes, "}");
    }
    absl::StrAppend(&json, "]}");
    std::printf("%s\n", json.c_str());
    return status;
  }

  std::printf("%-15s %4s %18s %7s %7s %7s %7s %7s %9s %6s %8s %8s\n",
              "back-end", "runs", "downtime ms", "stop", "sync", "state",
              "check", "start", "total ms", "rounds", "final pg", "state B");
  for (size_t i = 0; i < backends.size(); ++i) {
    const auto& rs = results[i];
    if (rs.empty()) {
      std::printf("%-15s %4d  n/a (every run failed, see above)\n",
                  backends[i].name.c_str(), 0);
      continue;
    }
    const auto [lo, hi] = range(rs, &RunResult::downtime);
    std::printf(
        "%-15s %4zu %6.2f [%.2f-%.2f] %7.2f %7.2f %7.2f %7.2f %7.2f %9.0f "
        "%6.0f %8.0f %8.0f\n",
        backends[i].name.c_str(), rs.size(), median(rs, &RunResult::downtime),
        lo, hi, median(rs, &RunResult::stop), median(rs, &RunResult::sync),
        median(rs, &RunResult::state), median(rs, &RunResult::check),
        median(rs, &RunResult::start), median(rs, &RunResult::total),
        median_u(rs, &RunResult::rounds), median_u(rs, &RunResult::final_pages),
        median_u(rs, &RunResult::state_bytes));
  }
  if (backends.size() == 2 && !results[0].empty() && !results[1].empty()) {
    const double ours = median(results[0], &RunResult::downtime);
    const double peer = median(results[1], &RunResult::downtime);
    std::printf("downtime, virtiofsd 1.13 / ours: %.2fx\n",
                ours > 0 ? peer / ours : 0);
  }
  std::printf(
      "medians; guest %llu MiB, %llu extra inodes looked up (10%% open), "
      "downtime budget %lld ms; load average before: %s, after: %s (%u "
      "cpus)\n",
      static_cast<unsigned long long>(o.guest_mib),
      static_cast<unsigned long long>(o.inodes),
      static_cast<long long>(o.budget_ms), load_before.c_str(),
      load_after.c_str(), std::thread::hardware_concurrency());
  return status;
}

}  // namespace vhostmig::cli
