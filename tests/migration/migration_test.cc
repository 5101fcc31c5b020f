// End-to-end migrations of the synthetic guest between two vhost-user-fs
// back-ends serving one shared directory: ours (in-process BackendServer +
// fs::VirtioFsDevice, with DEVICE_STATE), virtiofsd 1.13 (a real peer's
// DEVICE_STATE path) and the C virtiofsd (no DEVICE_STATE: refused).
//
// What a successful migration must show: the destination's RAM equals the
// source's byte for byte (hashed while both are stopped: the destination
// after Commit and before its rings start, the source after handover, when
// it stays paused for good); the workload continues on the destination at
// the step the source stopped at and verifies every block, journal record
// and page-cache slot ever written, through the handles the source opened.
#include <fcntl.h>

#include "gtest/gtest.h"
#include "tests/migration/migration_fixture.h"
#include "vhost/protocol/features.h"

namespace vhostmig::migration::testing {
namespace {

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status _s = (expr);              \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s; \
  } while (0)

class EndToEndTest : public MigrationTest {
 protected:
  // Migrates with `kind` on both sides and checks everything the file
  // comment lists.
  void MigrateAndVerify(BackendKind kind) {
    std::string why;
    if (!Available(kind, &why)) GTEST_SKIP() << KindName(kind) << ": " << why;
    auto source = StartBackend(kind, "src");
    ASSERT_TRUE(source.ok()) << source.status();
    auto destination = StartBackend(kind, "dst");
    ASSERT_TRUE(destination.ok()) << destination.status();

    RunOptions options;
    options.source.min_rounds = 3;  // several rounds while the vCPU writes
    std::vector<SourceProgress> events;
    options.source.observer = [&events](const SourceProgress& p) {
      events.push_back(p);
    };
    auto run = Migrate((*source)->socket_path(), (*destination)->socket_path(),
                       options);
    ASSERT_TRUE(run.ok()) << run.status();
    MigrationRun& r = **run;
    ASSERT_OK(r.source_status);
    ASSERT_OK(r.destination_status);
    EXPECT_TRUE(r.source->committed());

    // The source stays paused, its rings stopped; memory is identical.
    EXPECT_TRUE(r.source_guest->paused());
    ASSERT_TRUE(r.destination_hash_at_start.has_value());
    EXPECT_EQ(*r.destination_hash_at_start, r.source_guest->HashMemory())
        << "destination RAM differs from the source's after handover";

    // Progress: every phase in order, rounds counted, state bytes.
    std::vector<SourcePhase> phases;
    for (const SourceProgress& p : events) {
      if (phases.empty() || phases.back() != p.phase) phases.push_back(p.phase);
    }
    const std::vector<SourcePhase> want = {
        SourcePhase::kSetup, SourcePhase::kLogStart,  SourcePhase::kPreCopy,
        SourcePhase::kStop,  SourcePhase::kFinalSync, SourcePhase::kSaveState,
        SourcePhase::kCheck, SourcePhase::kHandover,  SourcePhase::kDone};
    EXPECT_EQ(phases, want);
    const SourceProgress last = r.source->progress();
    EXPECT_GE(last.round, 3u);
    EXPECT_GT(last.state_bytes, 0u) << "device state must travel";
    RecordProperty("state_bytes", static_cast<int>(last.state_bytes));
    RecordProperty("rounds", static_cast<int>(last.round));
    RecordProperty(
        "downtime_us",
        static_cast<int>(absl::ToInt64Microseconds(last.guest_paused_for)));

    // Zero pages cost a flag: far less data moved than pages.
    const TransportCounters sent = r.source_end->sent();
    EXPECT_LT(sent.page_data_bytes, sent.pages * kPageSize / 2);
    EXPECT_GE(sent.pages,
              r.source_guest->ram().memory().end_gpa() / kPageSize / 2);

    // The workload continues on the destination where the source stopped,
    // with the source's handles, and every byte checks out.
    guest::SyntheticGuest& dst = *r.destination_vmm->guest();
    EXPECT_EQ(dst.workload().counts().steps, r.steps_before);
    EXPECT_GE(r.steps_before, 16u);
    ASSERT_OK(dst.RunSteps(40));
    EXPECT_EQ(dst.workload().counts().steps, r.steps_before + 40);
    ASSERT_OK(dst.workload().VerifyAll());
    // And it can run on its own vCPU.
    ASSERT_OK(dst.StartVcpu());
    ASSERT_OK(dst.Pause());
    ASSERT_OK(dst.workload().VerifyAll());
    for (uint32_t q = 0; q < dst.driver().num_queues(); ++q) {
      EXPECT_EQ(dst.driver().queue(q).bad_used_count(), 0u)
          << "a used element for no request: something ran twice";
    }
  }
};

TEST_F(EndToEndTest, OurBackendOnBothSidesMigratesMemoryStateAndHandles) {
  MigrateAndVerify(BackendKind::kOurs);
}

TEST_F(EndToEndTest, Virtiofsd113OnBothSidesMigratesMemoryStateAndHandles) {
  MigrateAndVerify(BackendKind::kVirtiofsd113);
}

// The ring-disabling back-end (the old SET_FEATURES bug) on both sides:
// LOG_ALL is toggled on the running source while the vCPU issues requests;
// the coordinator's Frontend re-enables the rings, nothing stalls.
TEST_F(EndToEndTest, RingDisablingBackendDoesNotStallWhenLogAllIsSet) {
  MigrateAndVerify(BackendKind::kOursLegacy);
}

TEST_F(MigrationTest, CVirtiofsdIsRefusedBeforeAnyPageMoves) {
  std::string why;
  if (!Available(BackendKind::kCVirtiofsd, &why)) GTEST_SKIP() << why;
  auto source = StartBackend(BackendKind::kCVirtiofsd, "src");
  ASSERT_TRUE(source.ok()) << source.status();
  auto destination = StartBackend(BackendKind::kOurs, "dst");
  ASSERT_TRUE(destination.ok()) << destination.status();
  RunOptions options;
  auto run =
      Migrate((*source)->socket_path(), (*destination)->socket_path(), options);
  ASSERT_TRUE(run.ok()) << run.status();
  MigrationRun& r = **run;
  EXPECT_TRUE(absl::IsFailedPrecondition(r.source_status)) << r.source_status;
  EXPECT_NE(r.source_status.message().find("DEVICE_STATE"), std::string::npos)
      << r.source_status;
  // Nothing crossed but the Abort: not a page, not even the Hello.
  EXPECT_EQ(r.source_end->sent().messages, 1u);
  EXPECT_EQ(r.source_end->sent().page_extents, 0u);
  EXPECT_EQ(r.source_end->sent().pages, 0u);
  EXPECT_TRUE(absl::IsAborted(r.destination_status)) << r.destination_status;
  EXPECT_FALSE(r.destination_status.ok());
  EXPECT_EQ(r.destination_vmm->guest(), nullptr) << "destination not torn down";
  // The source never logged and still runs.
  EXPECT_EQ(
      r.source_guest->device().frontend().acked_features() & vhost::kLogAllMask,
      0u);
  ASSERT_OK(r.source_guest->Pause());
  ASSERT_OK(r.source_guest->RunSteps(8));
  ASSERT_OK(r.source_guest->workload().VerifyAll());
}

}  // namespace
}  // namespace vhostmig::migration::testing
