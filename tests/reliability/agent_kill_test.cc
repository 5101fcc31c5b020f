// Agent-kill cells of the fault matrix (docs/reliability.md, "Agent
// killed"): two vhostmig-agent processes on loopback, each starting our
// vhost-user-fs daemon on one shared directory; the source agent hosts a
// synthetic guest running the checksummed workload. The source holds for a
// moment on entering the phase under test (--debug-hold-phase), and the
// test SIGKILLs the source or the destination agent there. No root and no
// network namespace needed: a killed process's TCP connections end the same
// way on loopback as across a link (//tests/agent:netns_test covers link
// cuts, which do need namespaces).
//
// Every cell checks the matrix's outcome columns:
//   - the workload verifies: a resumed source guest passes VerifyGuest
//     (every block, journal record and page-cache slot read back through
//     the device);
//   - the files hold every acknowledged write: when no guest is left to ask
//     (its agent was killed, or it is paused in doubt), the shared directory
//     is checked on the host (CheckWorkloadFilesOnHost) against the steps
//     the guest had acknowledged before the kill;
//   - source and destination never both run: the destination tears its
//     incoming guest down when the source dies; a source whose destination
//     died either runs again (the destination, restarted, has no record of
//     a started guest) or, after Commit was due, stays paused IN_DOUBT until
//     an operator resolves it; a source agent restarted after dying keeps
//     the device blocked while its record is in doubt; the killed agent's
//     back-end daemons exit (their front-end died with it).
#include <dirent.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "guest/fs_workload.h"
#include "tests/agent/agent_harness.h"
#include "tests/reliability/reliability_fixture.h"

namespace vhostmig::agent::testing {
namespace {

enum class Killed { kSource, kDestination };

struct Cell {
  Killed killed;
  v1::Phase phase;  // the source phase the kill lands in
};

std::string CellName(const ::testing::TestParamInfo<Cell>& info) {
  std::string phase = v1::Phase_Name(info.param.phase);
  std::string camel;
  bool upper = true;
  for (char c : phase) {
    if (c == '_') {
      upper = true;
    } else {
      camel += upper ? c : static_cast<char>(c - 'A' + 'a');
      upper = false;
    }
  }
  return absl::StrCat(info.param.killed == Killed::kSource
                          ? "KillSourceAgentIn"
                          : "KillDestinationAgentIn",
                      camel);
}

// Processes whose command line mentions `needle` (our fs daemons get their
// socket path, under the agent's run directory, as an argument).
int ProcessesMentioning(const std::string& needle) {
  int found = 0;
  DIR* d = opendir("/proc");
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(absl::StrCat("/proc/", e->d_name, "/cmdline"));
    std::stringstream text;
    text << in.rdbuf();
    if (absl::StrContains(text.str(), needle)) ++found;
  }
  closedir(d);
  return found;
}

guest::FsWorkloadOptions WorkloadOf(const v1::GuestSpec& spec) {
  guest::FsWorkloadOptions w;
  w.files = spec.files();
  w.max_blocks = spec.max_blocks();
  w.read_every = spec.read_every();
  w.seed = spec.seed();
  return w;
}

uint64_t JournalRecords(const std::string& shared,
                        const guest::FsWorkloadOptions& w) {
  std::error_code ec;
  const uint64_t bytes = std::filesystem::file_size(
      absl::StrCat(shared, "/wl", w.seed, "-journal"), ec);
  return ec ? 0 : bytes / guest::FsWorkload::kRecordBytes;
}

class AgentKillTest : public ::testing::TestWithParam<Cell> {
 protected:
  void SetUp() override {
    shared_ = dir_.path() + "/shared";
    std::filesystem::create_directories(shared_);
    a_ = std::make_unique<AgentProcess>(AgentProcess::Options{
        dir_.path() + "/a",
        "",
        "127.0.0.1:0",
        {absl::StrCat("--debug-hold-phase=", v1::Phase_Name(GetParam().phase)),
         "--debug-hold-ms=3000"}});
    b_ = std::make_unique<AgentProcess>(
        AgentProcess::Options{dir_.path() + "/b", "", "127.0.0.1:0", {}});
    absl::Status s = a_->Start();
    ASSERT_TRUE(s.ok()) << s;
    s = b_->Start();
    ASSERT_TRUE(s.ok()) << s;
    ca_ = Connect(*a_);
    cb_ = Connect(*b_);
    ASSERT_TRUE(ca_ != nullptr && cb_ != nullptr);
    ASSERT_TRUE(StartFsDevice(*ca_->stub, "fs0", shared_).ok());
    ASSERT_TRUE(StartFsDevice(*cb_->stub, "fs0", shared_).ok());
    s = CreateGuest(*ca_->stub, "fs0");
    ASSERT_TRUE(s.ok()) << s;
  }

  // The agents and their fs daemons ran as processes: their sanitizer
  // reports are in their logs, not in this test's.
  void TearDown() override {
    ca_.reset();
    cb_.reset();
    for (AgentProcess* agent : {a_.get(), b_.get()}) {
      if (agent == nullptr) continue;
      agent->Kill(SIGKILL);
      ExpectBackendsGone(*agent);  // the daemons' logs are complete
    }
    const std::string reports = SanitizerReportsIn(dir_.path());
    EXPECT_TRUE(reports.empty()) << reports;
  }

  static std::unique_ptr<cli::AgentConnection> Connect(AgentProcess& agent) {
    auto c = cli::ConnectAgent(agent.address(), absl::Seconds(15));
    if (!c.ok()) {
      ADD_FAILURE() << c.status();
      return nullptr;
    }
    return std::make_unique<cli::AgentConnection>(*std::move(c));
  }

  // Polls `agent` for migration `id` until `done`.
  v1::MigrationStatus Await(
      cli::AgentConnection& agent, const std::string& id,
      const std::function<bool(const v1::MigrationStatus&)>& done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(90);
    v1::StatusRequest request;
    request.set_migration_id(id);
    v1::MigrationStatus status;
    while (absl::Now() < deadline) {
      grpc::Status s = agent.stub->Status(
          cli::CallContext(absl::Seconds(5)).get(), request, &status);
      if (s.ok() && done(status)) return status;
      absl::SleepFor(absl::Milliseconds(20));
    }
    ADD_FAILURE() << "timed out waiting on migration " << id << " at "
                  << agent.address << ": " << status.DebugString();
    return status;
  }

  // Waits until the source agent holds migration `id` on entering `phase`
  // (its log says so after the phase's bookkeeping, such as the IN_DOUBT
  // record written on entering Handover), so the kill lands in the hold.
  void AwaitHold(const std::string& id, v1::Phase phase) {
    const std::string line =
        absl::StrCat("holding migration ", id, " in ", v1::Phase_Name(phase));
    const absl::Time deadline = absl::Now() + absl::Seconds(90);
    while (!absl::StrContains(a_->Log(), line)) {
      ASSERT_LT(absl::Now(), deadline)
          << "never held in " << v1::Phase_Name(phase) << ": " << a_->Log();
      absl::SleepFor(absl::Milliseconds(10));
    }
  }

  // The killed agent's fs daemons exit: their front-end (the guest in that
  // agent) is gone.
  void ExpectBackendsGone(const AgentProcess& killed) {
    const std::string run_dir = killed.dir() + "/run/";
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (ProcessesMentioning(run_dir) > 0 && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    EXPECT_EQ(ProcessesMentioning(run_dir), 0)
        << "a back-end of the killed agent still runs";
  }

  // The files on the host hold at least the `acknowledged` steps, in order,
  // each block with its checksum (later steps the guest made before it died
  // too, the last one possibly half done).
  void ExpectFilesHoldAcknowledgedWrites(const guest::FsWorkloadOptions& w,
                                         uint64_t acknowledged) {
    const uint64_t records = JournalRecords(shared_, w);
    EXPECT_GE(records, acknowledged);
    // A step writes its block, then its journal record: every step with a
    // record is whole on disk, and the next one may have written its block.
    const uint64_t steps = std::max(records, acknowledged);
    absl::Status s = reliability::CheckWorkloadFilesOnHost(shared_, w, steps);
    EXPECT_TRUE(s.ok()) << s << " (" << acknowledged
                        << " steps acknowledged before the kill, " << records
                        << " journal records)";
  }

  ScratchDir dir_;
  std::string shared_;
  std::unique_ptr<AgentProcess> a_, b_;
  std::unique_ptr<cli::AgentConnection> ca_, cb_;
};

bool Settled(const v1::MigrationStatus& s) {
  return s.state() != v1::ACTIVE && s.state() != v1::PREPARED &&
         s.state() != v1::AWAITING_COMMIT &&
         s.state() != v1::MIGRATION_STATE_UNSPECIFIED;
}

TEST_P(AgentKillTest, OutcomeMatchesTheMatrix) {
  const Cell cell = GetParam();
  cli::MigrateArgs args;
  args.device = "fs0";
  args.timeout = absl::Minutes(2);
  // Bounds the destination's wait should the source die before it opens
  // its stream (the hold comes after that, so no cell does).
  args.wait_for_source = absl::Seconds(10);
  auto started = cli::StartMigration(*ca_, *cb_, args);
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string id = started->id();
  AwaitHold(id, cell.phase);
  if (HasFatalFailure()) return;
  auto before = Device(*ca_->stub, "fs0");
  ASSERT_TRUE(before.ok()) << before.status();
  const guest::FsWorkloadOptions workload = WorkloadOf(before->guest());
  const uint64_t acknowledged = before->workload_steps();

  if (cell.killed == Killed::kSource) {
    a_->Kill(SIGKILL);
    // The destination tears its incoming guest down.
    auto far = cli::AwaitSettled(*cb_, id, absl::Seconds(60));
    ASSERT_TRUE(far.ok()) << far.status();
    EXPECT_EQ(far->phase(), v1::TORN_DOWN) << far->DebugString();
    EXPECT_NE(far->state(), v1::COMPLETED);
    auto device = Device(*cb_->stub, "fs0");
    ASSERT_TRUE(device.ok()) << device.status();
    EXPECT_EQ(device->guest_state(), v1::GUEST_STATE_UNSPECIFIED);
    EXPECT_TRUE(device->migration_id().empty());
    ExpectBackendsGone(*a_);
    // The guest died with its VMM; what it was told is on disk.
    ExpectFilesHoldAcknowledgedWrites(workload, acknowledged);
    // Restarted, the source agent remembers only a migration in doubt
    // (from HANDOVER on), and then keeps the device for the operator.
    absl::Status s = a_->Start();
    ASSERT_TRUE(s.ok()) << s;
    ca_ = Connect(*a_);
    ASSERT_TRUE(ca_ != nullptr);
    v1::StatusRequest request;
    request.set_migration_id(id);
    v1::MigrationStatus record;
    grpc::Status got =
        ca_->stub->Status(cli::CallContext().get(), request, &record);
    if (cell.phase == v1::HANDOVER) {
      ASSERT_TRUE(got.ok()) << got.error_message();
      EXPECT_EQ(record.state(), v1::IN_DOUBT) << record.DebugString();
      ASSERT_TRUE(StartFsDevice(*ca_->stub, "fs0", shared_).ok());
      absl::Status refused = CreateGuest(*ca_->stub, "fs0");
      EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition)
          << refused;
      // The destination tore down: the operator settles the record.
      v1::ResolveRequest resolve;
      resolve.set_migration_id(id);
      resolve.set_resolution(v1::RESUME_SOURCE);
      got = ca_->stub->Resolve(cli::CallContext().get(), resolve, &record);
      ASSERT_TRUE(got.ok()) << got.error_message();
      EXPECT_EQ(record.state(), v1::RESOLVED);
    } else {
      EXPECT_TRUE(!got.ok() || record.state() == v1::FAILED)
          << record.DebugString();
    }
    return;
  }

  b_->Kill(SIGKILL);
  auto settled = Await(*ca_, id, Settled);
  ExpectBackendsGone(*b_);
  if (cell.phase == v1::HANDOVER) {
    // Commit was due: the source cannot know whether the destination got
    // it, so it stays paused, in doubt.
    EXPECT_EQ(settled.state(), v1::IN_DOUBT) << settled.DebugString();
    EXPECT_FALSE(settled.source_resumed());
    auto device = Device(*ca_->stub, "fs0");
    ASSERT_TRUE(device.ok()) << device.status();
    EXPECT_EQ(device->guest_state(), v1::GUEST_HANDED_OVER);
    // Paused: the count is exact.
    ExpectFilesHoldAcknowledgedWrites(workload, device->workload_steps());
  } else {
    EXPECT_TRUE(settled.state() == v1::FAILED ||
                settled.state() == v1::CANCELLED)
        << settled.DebugString();
    EXPECT_TRUE(settled.source_resumed()) << settled.DebugString();
    auto verified = VerifyGuest(*ca_->stub, "fs0");
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE(verified->ok()) << verified->message();
    EXPECT_GE(verified->workload_steps(), acknowledged);
  }
  // Restarted, the destination has no guest and no record of starting one.
  absl::Status s = b_->Start();
  ASSERT_TRUE(s.ok()) << s;
  cb_ = Connect(*b_);
  ASSERT_TRUE(cb_ != nullptr);
  v1::StatusRequest request;
  request.set_migration_id(id);
  v1::MigrationStatus record;
  grpc::Status got =
      cb_->stub->Status(cli::CallContext().get(), request, &record);
  EXPECT_TRUE(!got.ok() ||
              (record.state() != v1::COMPLETED && record.phase() != v1::START))
      << record.DebugString();
  v1::ListResponse list;
  ASSERT_TRUE(cb_->stub->List(cli::CallContext().get(), {}, &list).ok());
  EXPECT_EQ(list.devices_size(), 0);
  if (cell.phase == v1::HANDOVER) {
    // Which is what the operator needs to resume the source.
    v1::ResolveRequest resolve;
    resolve.set_migration_id(id);
    resolve.set_resolution(v1::RESUME_SOURCE);
    got = ca_->stub->Resolve(cli::CallContext().get(), resolve, &record);
    ASSERT_TRUE(got.ok()) << got.error_message();
    EXPECT_TRUE(record.source_resumed());
    auto verified = VerifyGuest(*ca_->stub, "fs0");
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_TRUE(verified->ok()) << verified->message();
  }
}

constexpr v1::Phase kPhases[] = {v1::SETUP, v1::LOG_START,  v1::PRE_COPY,
                                 v1::STOP,  v1::FINAL_SYNC, v1::SAVE_STATE,
                                 v1::CHECK, v1::HANDOVER};

std::vector<Cell> Cells(Killed killed) {
  std::vector<Cell> cells;
  for (v1::Phase p : kPhases) cells.push_back({killed, p});
  return cells;
}

INSTANTIATE_TEST_SUITE_P(Source, AgentKillTest,
                         ::testing::ValuesIn(Cells(Killed::kSource)), CellName);
INSTANTIATE_TEST_SUITE_P(Destination, AgentKillTest,
                         ::testing::ValuesIn(Cells(Killed::kDestination)),
                         CellName);

}  // namespace
}  // namespace vhostmig::agent::testing
