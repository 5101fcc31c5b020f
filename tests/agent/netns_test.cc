// Two agents as processes in two network namespaces made by this test,
// joined by a veth pair (10.77.0.1/30 and 10.77.0.2/30 on that link only;
// the test process itself joins the first namespace, where it talks to both
// agents over the link). Then:
//   - a migration across the link succeeds, memory and workload verified;
//   - the link is cut (ip link set down) during page transfer and during
//     state transfer: the source resumes, the destination tears down, the
//     workload verifies (nothing lost);
//   - the destination is killed after the source committed: the source
//     stays paused, IN DOUBT, survives its own restart in that state, and
//     resumes only when an operator resolves it.
// SIGKILL of either agent at every phase needs no namespace: those cells
// are //tests/reliability:agent_kill_test (agents on loopback), which runs
// without root.
// Skips, with the reason, where namespaces or veth pairs cannot be made.
// Namespaces are removed at exit (also stale ones of earlier runs).
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/agent/agent_harness.h"

namespace vhostmig::agent::testing {
namespace {

std::string g_ns_a, g_ns_b, g_skip;
constexpr char kAddrA[] = "10.77.0.1:7345";
constexpr char kAddrB[] = "10.77.0.2:7345";

bool Sh(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

void DeleteNamespaces() {
  if (!g_ns_a.empty()) Sh("ip netns del " + g_ns_a);
  if (!g_ns_b.empty()) Sh("ip netns del " + g_ns_b);
}

// Namespaces of earlier runs whose process is gone (killed by a timeout).
void DeleteStaleNamespaces() {
  DIR* d = opendir("/run/netns");
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    int pid = 0;
    char side = 0;
    if (std::sscanf(e->d_name, "vhmt%d%c", &pid, &side) == 2 &&
        kill(pid, 0) != 0) {
      Sh(absl::StrCat("ip netns del ", e->d_name));
    }
  }
  closedir(d);
}

void SetUpNetwork() {
  if (geteuid() != 0) {
    g_skip = "network namespaces need root";
    return;
  }
  DeleteStaleNamespaces();
  g_ns_a = absl::StrCat("vhmt", getpid(), "a");
  g_ns_b = absl::StrCat("vhmt", getpid(), "b");
  const std::string va = absl::StrCat("vhm", getpid(), "a");
  const std::string vb = absl::StrCat("vhm", getpid(), "b");
  const bool ok = Sh("ip netns add " + g_ns_a) &&
                  Sh("ip netns add " + g_ns_b) &&
                  Sh("ip -n " + g_ns_a + " link add " + va +
                     " type veth peer name " + vb + " netns " + g_ns_b) &&
                  Sh("ip -n " + g_ns_a + " addr add 10.77.0.1/30 dev " + va) &&
                  Sh("ip -n " + g_ns_b + " addr add 10.77.0.2/30 dev " + vb) &&
                  Sh("ip -n " + g_ns_a + " link set " + va + " up") &&
                  Sh("ip -n " + g_ns_b + " link set " + vb + " up") &&
                  Sh("ip -n " + g_ns_a + " link set lo up") &&
                  Sh("ip -n " + g_ns_b + " link set lo up");
  if (!ok) {
    g_skip = "cannot create network namespaces and a veth pair here";
    DeleteNamespaces();
    g_ns_a.clear();
    g_ns_b.clear();
    return;
  }
  // Join A on this (still the only) thread: every thread gRPC starts later
  // inherits it.
  int fd = open(("/run/netns/" + g_ns_a).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    g_skip = "cannot enter the test's network namespace";
  }
  if (fd >= 0) close(fd);
}

std::string LinkA() { return absl::StrCat("vhm", getpid(), "a"); }

bool SetLink(bool up) {
  return Sh("ip -n " + g_ns_a + " link set " + LinkA() +
            (up ? " up" : " down"));
}

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!g_skip.empty()) GTEST_SKIP() << g_skip;
    shared_ = dir_.path() + "/shared";
    std::filesystem::create_directories(shared_);
  }

  // Starts both agents (the source with `source_flags`), the devices and
  // the source guest.
  void StartAgents(std::vector<std::string> source_flags = {}) {
    a_ = std::make_unique<AgentProcess>(AgentProcess::Options{
        dir_.path() + "/a", g_ns_a, kAddrA, std::move(source_flags)});
    absl::Status started = a_->Start();
    ASSERT_TRUE(started.ok()) << started;
    b_ = std::make_unique<AgentProcess>(
        AgentProcess::Options{dir_.path() + "/b", g_ns_b, kAddrB, {}});
    started = b_->Start();
    ASSERT_TRUE(started.ok()) << started;
    Reconnect();
    ASSERT_TRUE(StartFsDevice(*ca_->stub, "fs0", shared_).ok());
    ASSERT_TRUE(StartFsDevice(*cb_->stub, "fs0", shared_).ok());
    absl::Status created = CreateGuest(*ca_->stub, "fs0");
    ASSERT_TRUE(created.ok()) << created;
  }

  void Reconnect() {
    auto ca = cli::ConnectAgent(kAddrA, absl::Seconds(15));
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<cli::AgentConnection>(*std::move(ca));
    auto cb = cli::ConnectAgent(kAddrB, absl::Seconds(15));
    ASSERT_TRUE(cb.ok()) << cb.status();
    cb_ = std::make_unique<cli::AgentConnection>(*std::move(cb));
  }

  cli::MigrateArgs Args() {
    cli::MigrateArgs args;
    args.device = "fs0";
    args.timeout = absl::Minutes(2);
    return args;
  }

  // A migration whose pre-copy runs for many rounds (see agent_test).
  cli::MigrateArgs LongArgs() {
    cli::MigrateArgs args = Args();
    args.options.set_max_bandwidth_mib_s(1);
    args.options.set_downtime_limit_ms(1);
    args.options.set_max_rounds(1000);
    return args;
  }

  // Polls the source until `done(status)`.
  v1::MigrationStatus AwaitSource(
      const std::string& id,
      const std::function<bool(const v1::MigrationStatus&)>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    v1::StatusRequest request;
    request.set_migration_id(id);
    v1::MigrationStatus status;
    while (absl::Now() < deadline) {
      grpc::Status s = ca_->stub->Status(
          cli::CallContext(absl::Seconds(5)).get(), request, &status);
      if (s.ok() && done(status)) return status;
      absl::SleepFor(absl::Milliseconds(20));
    }
    ADD_FAILURE() << "timed out waiting on migration " << id << ": "
                  << status.DebugString();
    return status;
  }

  void ExpectSourceResumedAndVerified(const std::string& id) {
    auto settled = AwaitSource(id, [](const v1::MigrationStatus& s) {
      return s.state() == v1::FAILED || s.state() == v1::CANCELLED ||
             s.state() == v1::COMPLETED || s.state() == v1::IN_DOUBT;
    });
    EXPECT_TRUE(settled.state() == v1::FAILED ||
                settled.state() == v1::CANCELLED)
        << settled.DebugString();
    EXPECT_TRUE(settled.source_resumed()) << settled.DebugString();
    auto verified = VerifyGuest(*ca_->stub, "fs0");
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE(verified->ok()) << verified->message();
  }

  void ExpectDestinationTornDown(const std::string& id) {
    auto far = cli::AwaitSettled(*cb_, id, absl::Seconds(60));
    ASSERT_TRUE(far.ok()) << far.status();
    EXPECT_EQ(far->phase(), v1::TORN_DOWN) << far->DebugString();
    auto device = Device(*cb_->stub, "fs0");
    ASSERT_TRUE(device.ok());
    EXPECT_EQ(device->guest_state(), v1::GUEST_STATE_UNSPECIFIED);
    EXPECT_TRUE(device->migration_id().empty());
  }

  ScratchDir dir_;
  std::string shared_;
  std::unique_ptr<AgentProcess> a_, b_;
  std::unique_ptr<cli::AgentConnection> ca_, cb_;
};

TEST_F(NetnsTest, MigrationAcrossTheVethLinkSucceeds) {
  StartAgents();
  auto result = cli::Migrate(*ca_, *cb_, Args());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->state(), v1::CONFIRMED) << result->message();
  EXPECT_TRUE(result->result().memory_verified());
  auto verified = VerifyGuest(*cb_->stub, "fs0");
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->message();
}

TEST_F(NetnsTest, LinkCutDuringPageTransferResumesTheSource) {
  // The source holds on entering pre-copy so that the cut lands before its
  // pages go out (a workload's dirty rate alone does not keep pre-copy
  // going reliably); then it sends them into the dead link.
  StartAgents({"--debug-hold-phase=PRE_COPY", "--debug-hold-ms=2000"});
  auto started = cli::StartMigration(*ca_, *cb_, LongArgs());
  ASSERT_TRUE(started.ok()) << started.status();
  AwaitSource(started->id(), [](const v1::MigrationStatus& s) {
    return s.phase() == v1::PRE_COPY;
  });
  const absl::Time cut = absl::Now();
  ASSERT_TRUE(SetLink(false));
  ExpectSourceResumedAndVerified(started->id());
  EXPECT_LT(absl::Now() - cut, absl::Seconds(30));
  ASSERT_TRUE(SetLink(true));
  Reconnect();
  ExpectDestinationTornDown(started->id());
}

TEST_F(NetnsTest, LinkCutDuringStateTransferResumesTheSource) {
  StartAgents({"--debug-hold-phase=SAVE_STATE", "--debug-hold-ms=3000"});
  auto started = cli::StartMigration(*ca_, *cb_, Args());
  ASSERT_TRUE(started.ok()) << started.status();
  AwaitSource(started->id(), [](const v1::MigrationStatus& s) {
    return s.phase() == v1::SAVE_STATE;
  });
  ASSERT_TRUE(SetLink(false));
  ExpectSourceResumedAndVerified(started->id());
  ASSERT_TRUE(SetLink(true));
  Reconnect();
  ExpectDestinationTornDown(started->id());
}

TEST_F(NetnsTest,
       DestinationLostAfterCommitLeavesTheSourcePausedUntilResolved) {
  StartAgents({"--debug-hold-phase=HANDOVER", "--debug-hold-ms=3000"});
  auto started = cli::StartMigration(*ca_, *cb_, Args());
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string id = started->id();
  AwaitSource(id, [](const v1::MigrationStatus& s) {
    return s.phase() == v1::HANDOVER;
  });
  b_->Kill(SIGKILL);
  auto in_doubt = AwaitSource(
      id, [](const v1::MigrationStatus& s) { return s.state() != v1::ACTIVE; });
  EXPECT_EQ(in_doubt.state(), v1::IN_DOUBT) << in_doubt.DebugString();
  EXPECT_FALSE(in_doubt.source_resumed());
  auto device = Device(*ca_->stub, "fs0");
  ASSERT_TRUE(device.ok());
  EXPECT_EQ(device->guest_state(), v1::GUEST_HANDED_OVER);

  // The source agent dies too and comes back: the record says IN_DOUBT and
  // the device cannot get a new guest until an operator decides.
  a_->Kill(SIGKILL);
  a_ = std::make_unique<AgentProcess>(
      AgentProcess::Options{dir_.path() + "/a", g_ns_a, kAddrA, {}});
  ASSERT_TRUE(a_->Start().ok());
  auto ca = cli::ConnectAgent(kAddrA, absl::Seconds(15));
  ASSERT_TRUE(ca.ok());
  ca_ = std::make_unique<cli::AgentConnection>(*std::move(ca));
  v1::StatusRequest status_request;
  status_request.set_migration_id(id);
  v1::MigrationStatus status;
  ASSERT_TRUE(
      ca_->stub->Status(cli::CallContext().get(), status_request, &status)
          .ok());
  EXPECT_EQ(status.state(), v1::IN_DOUBT);
  ASSERT_TRUE(StartFsDevice(*ca_->stub, "fs0", shared_).ok());
  absl::Status refused = CreateGuest(*ca_->stub, "fs0");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_NE(refused.message().find("resolve"), std::string::npos) << refused;

  v1::ResolveRequest resolve;
  resolve.set_migration_id(id);
  resolve.set_resolution(v1::RESUME_SOURCE);
  ASSERT_TRUE(
      ca_->stub->Resolve(cli::CallContext().get(), resolve, &status).ok());
  EXPECT_EQ(status.state(), v1::RESOLVED);
  EXPECT_TRUE(CreateGuest(*ca_->stub, "fs0").ok());
}

TEST_F(NetnsTest, ResolvingAPausedSourceResumesItsWorkload) {
  StartAgents({"--debug-hold-phase=HANDOVER", "--debug-hold-ms=3000"});
  auto started = cli::StartMigration(*ca_, *cb_, Args());
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string id = started->id();
  AwaitSource(id, [](const v1::MigrationStatus& s) {
    return s.phase() == v1::HANDOVER;
  });
  b_->Kill(SIGKILL);
  auto in_doubt = AwaitSource(
      id, [](const v1::MigrationStatus& s) { return s.state() != v1::ACTIVE; });
  ASSERT_EQ(in_doubt.state(), v1::IN_DOUBT) << in_doubt.DebugString();
  // The destination is gone for good: the operator resumes the source.
  v1::ResolveRequest resolve;
  resolve.set_migration_id(id);
  resolve.set_resolution(v1::RESUME_SOURCE);
  v1::MigrationStatus status;
  grpc::Status s =
      ca_->stub->Resolve(cli::CallContext().get(), resolve, &status);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(status.source_resumed());
  absl::SleepFor(absl::Milliseconds(200));
  auto verified = VerifyGuest(*ca_->stub, "fs0");
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->message();
}

}  // namespace
}  // namespace vhostmig::agent::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  vhostmig::agent::testing::SetUpNetwork();
  const int rc = RUN_ALL_TESTS();
  vhostmig::agent::testing::DeleteNamespaces();
  return rc;
}
