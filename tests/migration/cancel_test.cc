// Cancelling a migration of the synthetic guest at every source phase
// boundary and at seeded random points inside pre-copy and the device-state
// transfer, and from the destination, with our back-end on both sides
// (Ours*) and with virtiofsd 1.13 on both sides (Virtiofsd113*, skipped
// with the reason when the peer or root is missing). After a cancel: the
// source runs again (its vCPU was running during pre-copy and is resumed
// after a stop), LOG_ALL is cleared, every ring is enabled again, the
// destination is torn down, and the workload continues and verifies every
// byte it ever wrote (the O_APPEND journal proves no request was lost or
// executed twice across the ring stop and restart).
#include <random>
#include <string>
#include <tuple>
#include <vector>

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

// The back-end on both sides, for every test below.
const auto kBackends =
    ::testing::Values(BackendKind::kOurs, BackendKind::kVirtiofsd113);

class CancelTest : public MigrationTest {
 protected:
  virtual BackendKind Kind() const = 0;

  void SetUp() override {
    MigrationTest::SetUp();
    if (HasFatalFailure()) return;
    std::string why;
    if (!Available(Kind(), &why)) {
      GTEST_SKIP() << KindName(Kind()) << ": " << why;
    }
    auto s = StartBackend(Kind(), "src");
    ASSERT_TRUE(s.ok()) << s.status();
    source_ = *std::move(s);
    auto d = StartBackend(Kind(), "dst");
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
    RecordProperty("source_status", r.source_status.ToString());

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
                          public ::testing::WithParamInterface<
                              std::tuple<BackendKind, SourcePhase>> {
 protected:
  BackendKind Kind() const override { return std::get<0>(GetParam()); }
};

TEST_P(CancelAtPhaseTest, SourceResumesAndWorkloadVerifies) {
  RunOptions o = Options();
  const SourcePhase at = std::get<1>(GetParam());
  o.cancel_source_when = [at](const SourceProgress& p) {
    return p.phase == at;
  };
  ExpectCancelledAndSourceContinues(std::move(o));
}

INSTANTIATE_TEST_SUITE_P(
    EveryBoundary, CancelAtPhaseTest,
    ::testing::Combine(kBackends, ::testing::Values(SourcePhase::kSetup,
                                                    SourcePhase::kLogStart,
                                                    SourcePhase::kPreCopy,
                                                    SourcePhase::kStop,
                                                    SourcePhase::kFinalSync,
                                                    SourcePhase::kSaveState,
                                                    SourcePhase::kCheck)),
    [](const ::testing::TestParamInfo<std::tuple<BackendKind, SourcePhase>>&
           info) {
      return KindName(std::get<0>(info.param)) +
             PhaseName(std::get<1>(info.param));
    });

// The k-th progress event inside a phase, k drawn from a seeded generator.
class CancelAtRandomPointTest : public CancelTest,
                                public ::testing::WithParamInterface<
                                    std::tuple<BackendKind, SourcePhase, int>> {
 protected:
  BackendKind Kind() const override { return std::get<0>(GetParam()); }
};

TEST_P(CancelAtRandomPointTest, SourceResumesAndWorkloadVerifies) {
  const auto [kind, phase, seed] = GetParam();
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
    ::testing::Combine(kBackends,
                       ::testing::Values(SourcePhase::kPreCopy,
                                         SourcePhase::kSaveState),
                       ::testing::Values(1, 2, 3, 4)),
    [](const ::testing::TestParamInfo<
        std::tuple<BackendKind, SourcePhase, int>>& info) {
      return KindName(std::get<0>(info.param)) +
             PhaseName(std::get<1>(info.param)) + "Seed" +
             std::to_string(std::get<2>(info.param));
    });

class CancelByDestinationTest : public CancelTest,
                                public ::testing::WithParamInterface<
                                    std::tuple<BackendKind, DestinationPhase>> {
 protected:
  BackendKind Kind() const override { return std::get<0>(GetParam()); }
};

TEST_P(CancelByDestinationTest, SourceResumesAndWorkloadVerifies) {
  RunOptions o = Options();
  const DestinationPhase at = std::get<1>(GetParam());
  o.cancel_destination_when = [at](const DestinationProgress& p) {
    return p.phase == at;
  };
  ExpectCancelledAndSourceContinues(std::move(o), /*by_destination=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    DestinationPhases, CancelByDestinationTest,
    ::testing::Combine(kBackends,
                       ::testing::Values(DestinationPhase::kPrepare,
                                         DestinationPhase::kReceivePages,
                                         DestinationPhase::kLoadState,
                                         DestinationPhase::kCheck)),
    [](const ::testing::TestParamInfo<
        std::tuple<BackendKind, DestinationPhase>>& info) {
      return KindName(std::get<0>(info.param)) +
             PhaseName(std::get<1>(info.param));
    });

// Once Commit is sent the source must not resume: Cancel() is refused and
// the migration completes.
class CancelAfterCommitTest
    : public CancelTest,
      public ::testing::WithParamInterface<BackendKind> {
 protected:
  BackendKind Kind() const override { return GetParam(); }
};

TEST_P(CancelAfterCommitTest, CancelAfterCommitIsRefusedAndHandoverCompletes) {
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

INSTANTIATE_TEST_SUITE_P(Backends, CancelAfterCommitTest, kBackends,
                         [](const ::testing::TestParamInfo<BackendKind>& info) {
                           return KindName(info.param);
                         });

// A destination that gave up is noticed while pages still flow, not only
// when the source waits for Ready: the source stops after its next page
// batch and never pauses the guest for a migration that cannot complete.
TEST_F(MigrationTest, AbortFromTheDestinationEndsPreCopyBeforeTheGuestPauses) {
  auto backend = StartBackend(BackendKind::kOurs, "src");
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto guest = guest::SyntheticGuest::Create((*backend)->socket_path(), {});
  ASSERT_TRUE(guest.ok()) << guest.status();
  guest::SyntheticGuest& g = **guest;
  ASSERT_OK(g.RunSteps(8));
  ASSERT_OK(g.StartVcpu());
  auto [source_end, destination_end] = InProcessTransport::CreatePair();
  // The destination's Abort is waiting before the source sends anything.
  ASSERT_OK(destination_end->Send(Abort{"the destination gave up early"},
                                  absl::Seconds(1)));
  SyntheticSourceVmm vmm(&g);
  SourceOptions options;
  options.min_rounds = 3;
  std::vector<SourcePhase> phases;
  options.observer = [&phases](const SourceProgress& p) {
    if (phases.empty() || phases.back() != p.phase) phases.push_back(p.phase);
  };
  SourceMigration source(&vmm, source_end.get(), options);
  const absl::Status status = source.Run();
  EXPECT_TRUE(absl::IsAborted(status)) << status;
  EXPECT_NE(status.message().find("the destination gave up early"),
            std::string::npos)
      << status;
  const std::vector<SourcePhase> want = {
      SourcePhase::kSetup, SourcePhase::kLogStart, SourcePhase::kPreCopy,
      SourcePhase::kCancelling, SourcePhase::kDone};
  EXPECT_EQ(phases, want);
  // Round 1's first batch went out; the rest did not.
  EXPECT_EQ(source.progress().round, 1u);
  // No Abort is sent back to a destination that already gave up.
  EXPECT_EQ(source_end->sent().messages, 2u) << "Hello and one PageBatch";
  EXPECT_EQ(g.device().frontend().acked_features() & vhost::kLogAllMask, 0u);
  ASSERT_OK(g.Pause());
  ASSERT_OK(g.RunSteps(8));
  ASSERT_OK(g.workload().VerifyAll());
}

}  // namespace
}  // namespace vhostmig::migration::testing
