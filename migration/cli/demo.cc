// `vhostmig demo [--backend-cmd 'CMD with {sock} and {dir}'] [--json]`: the
// README's main job, on one machine. Starts two agents on loopback, each
// with fs back-ends on one temporary shared directory (our vhost-user-fs by
// default, or the back-end the command names, e.g. virtiofsd 1.13), creates
// a synthetic guest running its file workload on the first, migrates it to
// the second with a live progress bar, runs a short cancel drill there, and
// migrates it back. Every step is verified (destination memory equals the
// paused source's, the workload checks every block and its journal through
// the handles it opened before the migration); a table sums it up. The exit
// status says whether everything verified.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "migration/agent/dashed_flags.h"
#include "migration/cli/agent_client.h"
#include "migration/cli/subcommand.h"

ABSL_FLAG(std::string, backend_cmd, "",
          "demo: the fs back-end to use instead of ours, a command line with "
          "{sock} and {dir} placeholders, e.g. '/path/virtiofsd "
          "--socket-path={sock} --shared-dir={dir}'");
ABSL_FLAG(std::string, agent_binary, "",
          "demo: the vhostmig-agent to start (default: found next to vhostmig "
          "or in its Bazel runfiles)");
ABSL_FLAG(std::string, fs_backend, "",
          "demo: our vhost-user-fs daemon (default: found next to vhostmig or "
          "in its Bazel runfiles)");
ABSL_FLAG(bool, keep_temp, false,
          "demo: keep the temporary directory (logs, shared directory)");

namespace vhostmig::cli {
namespace {

std::string SelfDir() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? "." : self.parent_path().string();
}

// The first executable of `candidates`, or NotFound listing them all.
absl::StatusOr<std::string> FindProgram(const std::string& what,
                                        const std::string& flag,
                                        std::vector<std::string> candidates) {
  for (const std::string& c : candidates) {
    if (access(c.c_str(), X_OK) == 0) return c;
  }
  return absl::NotFoundError(absl::StrCat(
      "cannot find ", what, " (looked at ", absl::StrJoin(candidates, ", "),
      "). Build it (bazel build //migration:vhostmig-agent "
      "//fs_device:vhost-user-fs) or pass ",
      flag));
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const size_t from = lines.size() > 8 ? lines.size() - 8 : 0;
  std::string out;
  for (size_t i = from; i < lines.size(); ++i) {
    absl::StrAppend(&out, "    ", lines[i], "\n");
  }
  return out;
}

// A vhostmig-agent child on 127.0.0.1 with a free port; stopped (SIGTERM,
// then SIGKILL) when destroyed, and killed by the kernel if we die first.
class AgentProcess {
 public:
  static absl::StatusOr<std::unique_ptr<AgentProcess>> Start(
      const std::string& binary, const std::string& dir,
      const std::vector<std::string>& extra) {
    std::filesystem::create_directories(dir + "/run");
    auto p = std::unique_ptr<AgentProcess>(new AgentProcess());
    p->log_ = dir + "/agent.log";
    const std::string port_file = dir + "/port";
    std::vector<std::string> args = {
        binary, "--listen=127.0.0.1:0", "--port-file=" + port_file,
        "--state-dir=" + dir + "/state", "--run-dir=" + dir + "/run"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    p->pid_ = fork();
    if (p->pid_ < 0) return absl::InternalError("fork failed");
    if (p->pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != parent) _exit(1);
      FILE* log = std::fopen(p->log_.c_str(), "w");
      if (log != nullptr) {
        dup2(fileno(log), STDOUT_FILENO);
        dup2(fileno(log), STDERR_FILENO);
      }
      execv(argv[0], argv.data());
      _exit(127);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      std::ifstream in(port_file);
      int port = 0;
      if (in >> port && port > 0) {
        p->address_ = absl::StrCat("127.0.0.1:", port);
        return p;
      }
      int status;
      if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
        p->pid_ = -1;
        return absl::FailedPreconditionError(
            absl::StrCat("the agent ", binary, " exited at start; its log:\n",
                         Tail(p->log_)));
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return absl::DeadlineExceededError(
        absl::StrCat("the agent did not start serving in 20s; its log (",
                     p->log_, "):\n", Tail(p->log_)));
  }

  ~AgentProcess() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      absl::SleepFor(absl::Milliseconds(100));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  const std::string& address() const { return address_; }
  const std::string& log() const { return log_; }

 private:
  AgentProcess() = default;
  pid_t pid_ = -1;
  std::string address_;
  std::string log_;
};

struct Row {
  std::string step;
  bool ok = false;
  std::string outcome;
  uint64_t downtime_ms = 0;
  uint64_t total_ms = 0;
  uint32_t rounds = 0;
  uint64_t pages = 0;
  uint64_t state_bytes = 0;
  std::string verification;
};

absl::StatusOr<v1::VerifyGuestResponse> VerifyOn(AgentConnection& agent,
                                                 const std::string& device) {
  v1::VerifyGuestRequest request;
  request.set_device(device);
  v1::VerifyGuestResponse response;
  grpc::Status s = agent.stub->VerifyGuest(CallContext(absl::Seconds(60)).get(),
                                           request, &response);
  if (!s.ok()) return CallError("VerifyGuest on " + agent.address, s);
  return response;
}

Row MigrationRow(const std::string& step, AgentConnection& from,
                 AgentConnection& to, const MigrateArgs& args) {
  Row row;
  row.step = step;
  auto result = Migrate(from, to, args);
  if (!result.ok()) {
    row.outcome = "error";
    row.verification = std::string(result.status().message());
    return row;
  }
  const v1::MigrationResult& r = result->result();
  row.outcome = StateLabel(result->state());
  row.downtime_ms = r.downtime_ms();
  row.total_ms = r.total_ms();
  row.rounds = r.rounds();
  row.pages = r.pages_sent();
  row.state_bytes = r.state_bytes();
  if (result->state() != v1::CONFIRMED) {
    row.verification = result->message();
    return row;
  }
  auto verified = VerifyOn(to, args.device);
  if (!verified.ok()) {
    row.verification = std::string(verified.status().message());
    return row;
  }
  if (!r.memory_verified()) {
    row.verification = "destination memory differs from the source's";
    return row;
  }
  if (!verified->ok()) {
    row.verification = "workload: " + verified->message();
    return row;
  }
  row.ok = true;
  row.verification = absl::StrCat(
      "memory equal; workload ", verified->workload_steps(), " steps, ",
      verified->blocks_verified(), " blocks checked through the old handles");
  return row;
}

int Fail(const std::string& what, const absl::Status& status,
         const std::string& hint) {
  std::fprintf(stderr, "vhostmig demo: %s: %s\n%s", what.c_str(),
               std::string(status.message()).c_str(), hint.c_str());
  return 1;
}

}  // namespace

int RunDemo(int argc, char** argv) {
  agent::ParseDashedCommandLine(argc, argv);
  const bool json = absl::GetFlag(FLAGS_json);
  const std::string self = SelfDir();
  std::string agent_binary = absl::GetFlag(FLAGS_agent_binary);
  if (agent_binary.empty()) {
    auto found = FindProgram(
        "vhostmig-agent", "--agent-binary",
        {self + "/vhostmig-agent", self + "/../agent/vhostmig-agent",
         self + "/vhostmig.runfiles/vhostmig/migration/agent/vhostmig-agent"});
    if (!found.ok()) return Fail("setup", found.status(), "");
    agent_binary = *found;
  }
  std::vector<std::string> backend_flag;
  std::string backend_label;
  const std::string backend_cmd = absl::GetFlag(FLAGS_backend_cmd);
  if (!backend_cmd.empty()) {
    if (backend_cmd.find("{sock}") == std::string::npos ||
        backend_cmd.find("{dir}") == std::string::npos) {
      std::fprintf(stderr,
                   "vhostmig demo: --backend-cmd must contain {sock} and {dir}"
                   " (where the back-end listens and what it shares)\n");
      return 2;
    }
    backend_flag = {"--backend-cmd=" + backend_cmd};
    backend_label = backend_cmd;
  } else {
    std::string fs = absl::GetFlag(FLAGS_fs_backend);
    if (fs.empty()) {
      auto found = FindProgram(
          "vhost-user-fs", "--fs-backend",
          {self + "/vhost-user-fs", self + "/../../fs_device/vhost-user-fs",
           self + "/vhostmig.runfiles/vhostmig/fs_device/vhost-user-fs"});
      if (!found.ok()) return Fail("setup", found.status(), "");
      fs = *found;
    }
    backend_flag = {"--fs-backend=" + fs};
    backend_label = "vhost-user-fs (ours)";
  }

  char tmpl[] = "/tmp/vhostmig-demo-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::perror("vhostmig demo: mkdtemp");
    return 1;
  }
  const std::string work = tmpl;
  const std::string shared = work + "/shared";
  std::filesystem::create_directories(shared);
  auto say = [json](const std::string& line) {
    if (!json) std::fprintf(stderr, "== %s\n", line.c_str());
  };
  say(absl::StrCat("work directory ", work, "; back-end ", backend_label));

  bool all_ok = false;
  std::vector<Row> rows;
  {
    auto a = AgentProcess::Start(agent_binary, work + "/agent-a", backend_flag);
    if (!a.ok()) return Fail("starting agent A", a.status(), "");
    auto b = AgentProcess::Start(agent_binary, work + "/agent-b", backend_flag);
    if (!b.ok()) return Fail("starting agent B", b.status(), "");
    say(absl::StrCat("agents: A on ", (*a)->address(), ", B on ",
                     (*b)->address(), " (logs: ", work, "/agent-*/agent.log)"));
    auto ca = ConnectAgent((*a)->address());
    if (!ca.ok()) return Fail("agent A", ca.status(), "");
    auto cb = ConnectAgent((*b)->address());
    if (!cb.ok()) return Fail("agent B", cb.status(), "");

    const std::string device = "fs0";
    for (AgentConnection* c : {&*ca, &*cb}) {
      v1::StartDeviceRequest request;
      request.set_name(device);
      request.set_shared_dir(shared);
      v1::DeviceInfo info;
      grpc::Status s =
          c->stub->StartDevice(CallContext().get(), request, &info);
      if (!s.ok()) {
        return Fail("StartDevice on " + c->address, CallError("", s), "");
      }
    }
    v1::CreateGuestRequest create;
    create.set_device(device);
    create.set_warmup_steps(16);
    v1::DeviceInfo info;
    grpc::Status s = ca->stub->CreateGuest(CallContext(absl::Seconds(60)).get(),
                                           create, &info);
    if (!s.ok()) {
      return Fail(
          "creating the guest on A", CallError("CreateGuest", s),
          absl::StrCat("  the back-end's log is in ", work, "/agent-a/run/\n"));
    }
    say(absl::StrCat("guest running on A: ", info.guest().region_bytes_size(),
                     " RAM regions, ", info.guest().files(),
                     " files open, workload running"));

    MigrateArgs args;
    args.device = device;
    args.progress_bar = !json;
    args.timeout = absl::Minutes(5);
    say("migrating A -> B");
    rows.push_back(MigrationRow("migrate A -> B", *ca, *cb, args));

    if (rows.back().ok) {
      say("cancel drill on B -> A (cancel, then check that B resumed)");
      for (const char* phase : {"pre-copy", "save-state"}) {
        MigrateArgs drill = args;
        drill.progress_bar = false;
        std::vector<DrillIteration> d =
            RunDrills(*cb, *ca, drill, 1, phase, !json);
        Row row;
        row.step = absl::StrCat("drill: cancel at ", phase);
        row.ok = d[0].ok;
        row.outcome = d[0].ok ? "cancelled" : "error";
        row.total_ms = d[0].total_ms;
        row.verification =
            d[0].ok ? absl::StrCat("source resumed; workload ",
                                   d[0].steps_before, " -> ", d[0].steps_after,
                                   " steps, verified; destination torn down")
                    : d[0].failure;
        rows.push_back(row);
      }
      say("migrating B -> A");
      rows.push_back(MigrationRow("migrate B -> A", *cb, *ca, args));
    }
    all_ok = rows.size() == 4;
    for (const Row& r : rows) all_ok &= r.ok;
    // The agents stop here (destructors), taking guests and back-ends.
  }

  if (json) {
    std::vector<std::string> items;
    for (const Row& r : rows) {
      items.push_back(absl::StrCat(
          "{\"step\":", JsonQuote(r.step), ",\"ok\":", r.ok ? "true" : "false",
          ",\"outcome\":", JsonQuote(r.outcome), ",\"downtime_ms\":",
          r.downtime_ms, ",\"total_ms\":", r.total_ms, ",\"rounds\":", r.rounds,
          ",\"pages\":", r.pages, ",\"state_bytes\":", r.state_bytes,
          ",\"verification\":", JsonQuote(r.verification), "}"));
    }
    std::printf("{\"verified\":%s,\"backend\":%s,\"steps\":[%s]}\n",
                all_ok ? "true" : "false", JsonQuote(backend_label).c_str(),
                absl::StrJoin(items, ",").c_str());
  } else {
    std::printf("\n%-28s %-10s %9s %9s %6s %7s %10s  %s\n", "STEP", "OUTCOME",
                "DOWNTIME", "TOTAL", "ROUNDS", "PAGES", "STATE", "VERIFIED");
    for (const Row& r : rows) {
      const bool migration = r.step.rfind("migrate", 0) == 0;
      std::printf("%-28s %-10s %9s %9s %6s %7s %10s  %s%s\n", r.step.c_str(),
                  r.outcome.c_str(),
                  migration ? absl::StrCat(r.downtime_ms, " ms").c_str() : "-",
                  absl::StrCat(r.total_ms, " ms").c_str(),
                  migration ? absl::StrCat(r.rounds).c_str() : "-",
                  migration ? absl::StrCat(r.pages).c_str() : "-",
                  migration ? Bytes(r.state_bytes).c_str() : "-",
                  r.ok ? "yes: " : "NO: ", r.verification.c_str());
    }
    std::printf(
        "\n%s\n",
        all_ok ? "demo: everything verified"
               : absl::StrCat("demo: FAILED; logs kept in ", work).c_str());
  }
  if (all_ok && !absl::GetFlag(FLAGS_keep_temp)) {
    std::error_code ec;
    std::filesystem::remove_all(work, ec);
  }
  return all_ok ? 0 : 1;
}

}  // namespace vhostmig::cli
