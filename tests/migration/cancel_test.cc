// Cancelling a migration of the synthetic guest (ours on both sides) at
// every source phase boundary and at seeded random points inside pre-copy
// and the device-state transfer, and from the destination. After a cancel:
// the source runs again (its vCPU was running during pre-copy and is
// resumed after a stop), LOG_ALL is cleared, every ring is enabled again,
// the destination is torn down, and the workload continues and verifies
// every byte it ever wrote (the O_APPEND journal proves no request was lost
// or executed twice across the ring stop and restart).
#include <random>
#include <string>

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

class CancelTest : public MigrationTest {
 protected:
  void SetUp() override {
    MigrationTest::SetUp();
    auto s = StartBackend(BackendKind::kOurs, "src");
    ASSERT_TRUE(s.ok()) << s.status();
    source_ = *std::move(s);
    auto d = StartBackend(BackendKind::kOurs, "dst");
    ASSERT_TRUE(d.ok()) << d.status();
    destination_ = *std::move(d);
  }

  RunOptions Options() {
    RunOptions o;
    o.source.min_rounds = 3;
    o.source.batch_bytes = 16 << 10;  // many batches: many cancel points
    o.source.state_chunk_bytes = 16;  // many state chunks
    return o;
  }

  // Runs a migration with `options` and checks the cancelled outcome.
  void ExpectCancelledAndSourceContinues(RunOptions options,
                                         bool by_destination = false) {
    auto run = Migrate(source_->socket_path(), destination_->socket_path(),
                       std::move(options));
    ASSERT_TRUE(run.ok()) << run.status();
    MigrationRun& r = **run;
    ASSERT_TRUE(r.cancel_accepted.has_value()) << "the cancel point never came";
    EXPECT_TRUE(*r.cancel_accepted);
    EXPECT_FALSE(r.source->committed());
    if (by_destination) {
      EXPECT_TRUE(absl::IsAborted(r.source_status)) << r.source_status;
      EXPECT_TRUE(absl::IsCancelled(r.destination_status))
          << r.destination_status;
    } else {
      EXPECT_TRUE(absl::IsCancelled(r.source_status)) << r.source_status;
      EXPECT_FALSE(r.destination_status.ok());
    }
    EXPECT_EQ(r.destination_vmm->guest(), nullptr)
        << "the destination was not torn down";
    EXPECT_EQ(r.source->progress().phase, SourcePhase::kDone);

    guest::SyntheticGuest& g = *r.source_guest;
    vhost::Frontend& f = g.device().frontend();
    EXPECT_EQ(f.acked_features() & vhost::kLogAllMask, 0u)
        << "LOG_ALL still set after cancel";
    EXPECT_EQ(f.enabled_rings().size(), g.driver().num_queues());
    // The vCPU runs again: pausing it succeeds and it failed no step.
    ASSERT_OK(g.Pause());
    const uint64_t steps = g.workload().counts().steps;
    ASSERT_OK(g.RunSteps(24));
    EXPECT_EQ(g.workload().counts().steps, steps + 24);
    ASSERT_OK(g.workload().VerifyAll());
    for (uint32_t q = 0; q < g.driver().num_queues(); ++q) {
      EXPECT_EQ(g.driver().queue(q).bad_used_count(), 0u);
    }
    // And a second migration of the same guest goes through.
    ASSERT_OK(g.Resume());
  }

  std::unique_ptr<Backend> source_;
  std::unique_ptr<Backend> destination_;
};

class CancelAtPhaseTest : public CancelTest,
                          public ::testing::WithParamInterface<SourcePhase> {};

TEST_P(CancelAtPhaseTest, SourceResumesAndWorkloadVerifies) {
  RunOptions o = Options();
  const SourcePhase at = GetParam();
  o.cancel_source_when = [at](const SourceProgress& p) {
    return p.phase == at;
  };
  ExpectCancelledAndSourceContinues(std::move(o));
}

INSTANTIATE_TEST_SUITE_P(
    EveryBoundary, CancelAtPhaseTest,
    ::testing::Values(SourcePhase::kSetup, SourcePhase::kLogStart,
                      SourcePhase::kPreCopy, SourcePhase::kStop,
                      SourcePhase::kFinalSync, SourcePhase::kSaveState,
                      SourcePhase::kCheck),
    [](const ::testing::TestParamInfo<SourcePhase>& info) {
      return std::string(PhaseName(info.param));
    });

// The k-th progress event inside a phase, k drawn from a seeded generator.
class CancelAtRandomPointTest
    : public CancelTest,
      public ::testing::WithParamInterface<std::tuple<SourcePhase, int>> {};

TEST_P(CancelAtRandomPointTest, SourceResumesAndWorkloadVerifies) {
  const auto [phase, seed] = GetParam();
  std::mt19937 rng(seed);
  const int k = std::uniform_int_distribution<int>(1, 8)(rng);
  RecordProperty("cancel_event", k);
  RunOptions o = Options();
  o.cancel_source_when = [phase = phase, k,
                          n = 0](const SourceProgress& p) mutable {
    return p.phase == phase && ++n == k;
  };
  ExpectCancelledAndSourceContinues(std::move(o));
}

INSTANTIATE_TEST_SUITE_P(
    Seeded, CancelAtRandomPointTest,
    ::testing::Combine(::testing::Values(SourcePhase::kPreCopy,
                                         SourcePhase::kSaveState),
                       ::testing::Values(1, 2, 3, 4)),
    [](const ::testing::TestParamInfo<std::tuple<SourcePhase, int>>& info) {
      return std::string(PhaseName(std::get<0>(info.param))) + "Seed" +
             std::to_string(std::get<1>(info.param));
    });

class CancelByDestinationTest
    : public CancelTest,
      public ::testing::WithParamInterface<DestinationPhase> {};

TEST_P(CancelByDestinationTest, SourceResumesAndWorkloadVerifies) {
  RunOptions o = Options();
  const DestinationPhase at = GetParam();
  o.cancel_destination_when = [at](const DestinationProgress& p) {
    return p.phase == at;
  };
  ExpectCancelledAndSourceContinues(std::move(o), /*by_destination=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    DestinationPhases, CancelByDestinationTest,
    ::testing::Values(DestinationPhase::kPrepare,
                      DestinationPhase::kReceivePages,
                      DestinationPhase::kLoadState, DestinationPhase::kCheck),
    [](const ::testing::TestParamInfo<DestinationPhase>& info) {
      return std::string(PhaseName(info.param));
    });

// Once Commit is sent the source must not resume: Cancel() is refused and
// the migration completes.
TEST_F(CancelTest, CancelAfterCommitIsRefusedAndHandoverCompletes) {
  RunOptions o = Options();
  o.cancel_source_when = [](const SourceProgress& p) {
    return p.phase == SourcePhase::kHandover;
  };
  auto run = Migrate(source_->socket_path(), destination_->socket_path(), o);
  ASSERT_TRUE(run.ok()) << run.status();
  MigrationRun& r = **run;
  ASSERT_TRUE(r.cancel_accepted.has_value());
  EXPECT_FALSE(*r.cancel_accepted);
  ASSERT_OK(r.source_status);
  ASSERT_OK(r.destination_status);
  EXPECT_TRUE(r.source_guest->paused());
  guest::SyntheticGuest& dst = *r.destination_vmm->guest();
  ASSERT_OK(dst.RunSteps(8));
  ASSERT_OK(dst.workload().VerifyAll());
}

}  // namespace
}  // namespace vhostmig::migration::testing
