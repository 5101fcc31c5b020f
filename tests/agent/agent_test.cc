// Two agents in this process on loopback, each starting our vhost-user-fs
// daemon on one shared directory, and a synthetic guest with its running
// workload: full migrations over the agents' Transfer stream, Watch, cancel
// at every source phase and by RPC, manual commit, and the refusal of bad
// requests.
#include <filesystem>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/agent/agent_harness.h"

namespace vhostmig::agent::testing {
namespace {

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shared_ = dir_.path() + "/shared";
    std::filesystem::create_directories(shared_);
    auto a = LocalAgent::Start(dir_.path() + "/a", {}, hold_phase_,
                               absl::Seconds(1));
    ASSERT_TRUE(a.ok()) << a.status();
    a_ = *std::move(a);
    auto b = LocalAgent::Start(dir_.path() + "/b");
    ASSERT_TRUE(b.ok()) << b.status();
    b_ = *std::move(b);
    auto ca = cli::ConnectAgent(a_->address());
    ASSERT_TRUE(ca.ok()) << ca.status();
    ca_ = std::make_unique<cli::AgentConnection>(*std::move(ca));
    auto cb = cli::ConnectAgent(b_->address());
    ASSERT_TRUE(cb.ok()) << cb.status();
    cb_ = std::make_unique<cli::AgentConnection>(*std::move(cb));
    ASSERT_TRUE(StartFsDevice(*ca_->stub, "fs0", shared_).ok());
    ASSERT_TRUE(StartFsDevice(*cb_->stub, "fs0", shared_).ok());
    absl::Status created = CreateGuest(*ca_->stub, "fs0");
    ASSERT_TRUE(created.ok()) << created;
  }

  // The fs daemons' sanitizer reports are in their logs.
  void TearDown() override {
    ca_.reset();
    cb_.reset();
    a_.reset();
    b_.reset();
    const std::string reports = SanitizerReportsIn(dir_.path());
    EXPECT_TRUE(reports.empty()) << reports;
  }

  cli::MigrateArgs Args() {
    cli::MigrateArgs args;
    args.device = "fs0";
    args.timeout = absl::Minutes(2);
    return args;
  }

  // The source waits a second on entering this phase (tests that must act
  // in a phase that would otherwise be too short to hit).
  v1::Phase hold_phase_ = v1::PHASE_UNSPECIFIED;
  ScratchDir dir_;
  std::string shared_;
  std::unique_ptr<LocalAgent> a_;
  std::unique_ptr<LocalAgent> b_;
  std::unique_ptr<cli::AgentConnection> ca_;
  std::unique_ptr<cli::AgentConnection> cb_;
};

TEST_F(AgentTest, MigratesThereAndBackWithMemoryAndWorkloadVerified) {
  auto there = cli::Migrate(*ca_, *cb_, Args());
  ASSERT_TRUE(there.ok()) << there.status();
  EXPECT_EQ(there->state(), v1::CONFIRMED) << there->message();
  EXPECT_TRUE(there->result().memory_verified());
  EXPECT_GE(there->result().rounds(), 1u);
  EXPECT_GT(there->result().state_bytes(), 0u);
  auto on_b = VerifyGuest(*cb_->stub, "fs0");
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_TRUE(on_b->ok()) << on_b->message();
  // The source released its paused guest on Confirm.
  auto on_a = Device(*ca_->stub, "fs0");
  ASSERT_TRUE(on_a.ok());
  EXPECT_EQ(on_a->guest_state(), v1::GUEST_STATE_UNSPECIFIED);

  auto back = cli::Migrate(*cb_, *ca_, Args());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->state(), v1::CONFIRMED) << back->message();
  EXPECT_TRUE(back->result().memory_verified());
  auto again = VerifyGuest(*ca_->stub, "fs0");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->ok()) << again->message();
  EXPECT_GT(again->workload_steps(), on_b->workload_steps());
}

TEST_F(AgentTest, WatchReportsPhasesInOrderAndEndsFinal) {
  auto started = cli::StartMigration(*ca_, *cb_, Args());
  ASSERT_TRUE(started.ok()) << started.status();
  grpc::ClientContext context;
  v1::WatchRequest request;
  request.set_migration_id(started->id());
  auto reader = ca_->stub->Watch(&context, request);
  v1::ProgressEvent event;
  int last_phase = 0;
  bool saw_precopy = false, final_seen = false;
  uint64_t last_seq = 0;
  while (reader->Read(&event)) {
    EXPECT_GT(event.sequence(), last_seq);
    last_seq = event.sequence();
    const int phase = event.status().phase();
    EXPECT_GE(phase, last_phase) << v1::Phase_Name(event.status().phase());
    last_phase = phase;
    saw_precopy |= phase == v1::PRE_COPY;
    if (event.final()) {
      final_seen = true;
      EXPECT_EQ(event.status().state(), v1::COMPLETED);
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(saw_precopy);
  EXPECT_TRUE(final_seen);
  // The destination's record agrees.
  auto far = cli::AwaitSettled(*cb_, started->id(), absl::Seconds(30));
  ASSERT_TRUE(far.ok()) << far.status();
  EXPECT_EQ(far->state(), v1::COMPLETED);
  EXPECT_EQ(far->result().destination_memory_hash(),
            event.status().result().source_memory_hash());
}

TEST_F(AgentTest, CancelAtEverySourcePhaseResumesTheSource) {
  for (const char* phase : {"setup", "log-start", "pre-copy", "stop",
                            "final-sync", "save-state", "check"}) {
    std::vector<cli::DrillIteration> result =
        cli::RunDrills(*ca_, *cb_, Args(), 1, phase, false);
    ASSERT_EQ(result.size(), 1u);
    EXPECT_TRUE(result[0].ok) << phase << ": " << result[0].failure;
  }
  // After the drills the guest still migrates.
  auto there = cli::Migrate(*ca_, *cb_, Args());
  ASSERT_TRUE(there.ok()) << there.status();
  EXPECT_EQ(there->state(), v1::CONFIRMED) << there->message();
}

class AgentHoldTest : public AgentTest {
 protected:
  AgentHoldTest() { hold_phase_ = v1::PRE_COPY; }
};

TEST_F(AgentHoldTest, CancelRpcDuringPreCopyResumesTheSource) {
  auto started = cli::StartMigration(*ca_, *cb_, Args());
  ASSERT_TRUE(started.ok()) << started.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (;;) {
    v1::StatusRequest request;
    request.set_migration_id(started->id());
    v1::MigrationStatus status;
    ASSERT_TRUE(
        ca_->stub->Status(cli::CallContext().get(), request, &status).ok());
    if (status.phase() == v1::PRE_COPY) break;
    ASSERT_LT(absl::Now(), deadline)
        << "pre-copy never started: " << status.DebugString();
    absl::SleepFor(absl::Milliseconds(20));
  }
  v1::CancelRequest cancel;
  cancel.set_migration_id(started->id());
  v1::MigrationStatus ignored;
  grpc::Status s =
      ca_->stub->Cancel(cli::CallContext().get(), cancel, &ignored);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto settled = cli::AwaitSettled(*ca_, started->id(), absl::Seconds(30));
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(settled->state(), v1::CANCELLED);
  EXPECT_TRUE(settled->source_resumed());
  auto far = cli::AwaitSettled(*cb_, started->id(), absl::Seconds(30));
  ASSERT_TRUE(far.ok()) << far.status();
  EXPECT_EQ(far->phase(), v1::TORN_DOWN);
  auto verified = VerifyGuest(*ca_->stub, "fs0");
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->message();
}

TEST_F(AgentTest, CancelWhileAwaitingCommitResumesThePausedSource) {
  cli::MigrateArgs args = Args();
  args.options.set_manual_commit(true);
  auto started = cli::StartMigration(*ca_, *cb_, args);
  ASSERT_TRUE(started.ok()) << started.status();
  v1::StatusRequest request;
  request.set_migration_id(started->id());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  v1::MigrationStatus status;
  do {
    ASSERT_LT(absl::Now(), deadline) << "never reached awaiting-commit";
    absl::SleepFor(absl::Milliseconds(20));
    ASSERT_TRUE(
        ca_->stub->Status(cli::CallContext().get(), request, &status).ok());
  } while (status.state() != v1::AWAITING_COMMIT);
  v1::CancelRequest cancel;
  cancel.set_migration_id(started->id());
  ASSERT_TRUE(
      ca_->stub->Cancel(cli::CallContext().get(), cancel, &status).ok());
  auto settled = cli::AwaitSettled(*ca_, started->id(), absl::Seconds(30));
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(settled->state(), v1::CANCELLED);
  auto far = cli::AwaitSettled(*cb_, started->id(), absl::Seconds(30));
  ASSERT_TRUE(far.ok()) << far.status();
  EXPECT_EQ(far->phase(), v1::TORN_DOWN);
  auto verified = VerifyGuest(*ca_->stub, "fs0");
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->message();
}

TEST_F(AgentTest, ManualCommitHoldsTheDestinationUntilCommit) {
  cli::MigrateArgs args = Args();
  args.options.set_manual_commit(true);
  auto started = cli::StartMigration(*ca_, *cb_, args);
  ASSERT_TRUE(started.ok()) << started.status();
  v1::StatusRequest request;
  request.set_migration_id(started->id());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  v1::MigrationStatus status;
  do {
    ASSERT_LT(absl::Now(), deadline) << "never reached awaiting-commit";
    absl::SleepFor(absl::Milliseconds(20));
    ASSERT_TRUE(
        ca_->stub->Status(cli::CallContext().get(), request, &status).ok());
  } while (status.state() != v1::AWAITING_COMMIT);
  // Not started on the destination: no guest runs there yet.
  v1::MigrationStatus far;
  ASSERT_TRUE(cb_->stub->Status(cli::CallContext().get(), request, &far).ok());
  EXPECT_NE(far.phase(), v1::START);
  EXPECT_NE(far.state(), v1::COMPLETED);
  v1::CommitRequest commit;
  commit.set_migration_id(started->id());
  ASSERT_TRUE(
      ca_->stub->Commit(cli::CallContext().get(), commit, &status).ok());
  auto settled = cli::AwaitSettled(*ca_, started->id(), absl::Seconds(30));
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(settled->state(), v1::COMPLETED);
  EXPECT_TRUE(settled->result().memory_verified());
}

TEST_F(AgentTest, RejectsInvalidRequestsWithClearMessages) {
  v1::StartDeviceRequest bad_name;
  bad_name.set_name("../etc");
  bad_name.set_shared_dir(shared_);
  v1::DeviceInfo info;
  grpc::Status s =
      ca_->stub->StartDevice(cli::CallContext().get(), bad_name, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("name"), std::string::npos);

  v1::StartDeviceRequest relative;
  relative.set_name("fs1");
  relative.set_shared_dir("shared/../..");
  s = ca_->stub->StartDevice(cli::CallContext().get(), relative, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("shared_dir"), std::string::npos);

  v1::CreateGuestRequest huge;
  huge.set_device("fs0");
  huge.mutable_spec()->add_region_bytes(1ull << 40);
  s = ca_->stub->CreateGuest(cli::CallContext().get(), huge, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("region_bytes"), std::string::npos);

  v1::PerformRequest perform;
  perform.set_device("fs0");
  perform.set_destination("not an address");
  perform.set_migration_id("00ff");
  perform.set_token("00ff");
  v1::MigrationStatus status;
  s = ca_->stub->Perform(cli::CallContext().get(), perform, &status);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("destination"), std::string::npos);

  perform.set_destination(b_->address());
  perform.set_migration_id("Z");
  s = ca_->stub->Perform(cli::CallContext().get(), perform, &status);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("migration_id"), std::string::npos);

  perform.set_migration_id("00ff");
  perform.mutable_options()->set_cancel_at(v1::HANDOVER);
  s = ca_->stub->Perform(cli::CallContext().get(), perform, &status);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  v1::ResolveRequest resolve;
  resolve.set_migration_id("00ff");
  s = ca_->stub->Resolve(cli::CallContext().get(), resolve, &status);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(AgentTest, WrongTokenIsRefusedAndTheSourceKeepsRunning) {
  v1::PrepareRequest prepare;
  prepare.set_device("fs0");
  v1::PrepareResponse prepared;
  ASSERT_TRUE(
      cb_->stub->Prepare(cli::CallContext().get(), prepare, &prepared).ok());
  v1::PerformRequest perform;
  perform.set_device("fs0");
  perform.set_destination(b_->address());
  perform.set_migration_id(prepared.migration_id());
  perform.set_token(std::string(prepared.token().size(), '0'));
  v1::MigrationStatus status;
  ASSERT_TRUE(
      ca_->stub->Perform(cli::CallContext().get(), perform, &status).ok());
  auto settled =
      cli::AwaitSettled(*ca_, prepared.migration_id(), absl::Seconds(30));
  ASSERT_TRUE(settled.ok()) << settled.status();
  EXPECT_EQ(settled->state(), v1::FAILED);
  EXPECT_NE(settled->message().find("token"), std::string::npos)
      << settled->message();
  auto verified = VerifyGuest(*ca_->stub, "fs0");
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok()) << verified->message();
}

}  // namespace
}  // namespace vhostmig::agent::testing
