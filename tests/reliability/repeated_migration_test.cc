// Repeated migrations (issue 7, docs/reliability.md): one synthetic guest
// migrated back and forth between two vhost-user-fs daemon processes on one
// shared directory, N times, while its vCPU runs the checksummed workload
// during every pre-copy. After every handover: destination RAM = source RAM
// (both stopped), the workload continues at the step the source stopped at
// and verifies every block, journal record (a request lost or run twice
// shows there) and page-cache slot, and no used element answers a request
// that was not made. The daemon left behind exits when its guest lets go
// (as virtiofsd does) and a fresh one takes its socket for the way back.
//
// N is 10 in the suite; VHOSTMIG_RELIABILITY_ITERATIONS sets it (the long
// run is 100; docs/reliability.md records its result and time).
#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/migration/migration_fixture.h"
#include "tests/reliability/reliability_fixture.h"

namespace vhostmig::reliability {
namespace {

using migration::testing::MigrationRun;
using migration::testing::RunOptions;

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status _s = (expr);              \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s; \
  } while (0)

uint32_t Iterations() {
  uint32_t n = 10;
  const char* env = std::getenv("VHOSTMIG_RELIABILITY_ITERATIONS");
  if (env != nullptr && !absl::SimpleAtoi(env, &n)) n = 10;
  return n;
}

using RepeatedMigrationTest = migration::testing::MigrationTest;

TEST_F(RepeatedMigrationTest,
       BackAndForthUnderContinuousWorkloadVerifiesAfterEveryHandover) {
  const uint32_t iterations = Iterations();
  RecordProperty("iterations", static_cast<int>(iterations));
  const std::string sockets[2] = {absl::StrCat(root_, "/a.sock"),
                                  absl::StrCat(root_, "/b.sock")};
  std::unique_ptr<FsDaemon> daemons[2];
  for (int i = 0; i < 2; ++i) {
    auto d = FsDaemon::Start(shared_dir(), sockets[i]);
    ASSERT_TRUE(d.ok()) << d.status();
    daemons[i] = *std::move(d);
  }
  RunOptions o;
  o.source.min_rounds = 2;
  o.guest.workload.max_blocks = 16;
  auto created = guest::SyntheticGuest::Create(sockets[0], o.guest);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<guest::SyntheticGuest> guest = *std::move(created);
  ASSERT_OK(guest->RunSteps(16));
  ASSERT_OK(guest->StartVcpu());

  const absl::Time start = absl::Now();
  uint64_t steps = 16;
  int here = 0;
  for (uint32_t i = 0; i < iterations; ++i) {
    SCOPED_TRACE(absl::StrCat("migration ", i + 1, " of ", iterations));
    const int there = 1 - here;
    auto migrated =
        migration::testing::MigrateGuest(std::move(guest), sockets[there], o);
    ASSERT_TRUE(migrated.ok()) << migrated.status();
    MigrationRun& r = **migrated;
    ASSERT_OK(r.source_status);
    ASSERT_OK(r.destination_status);
    ASSERT_TRUE(r.source_guest->paused());
    ASSERT_TRUE(r.destination_hash_at_start.has_value());
    ASSERT_EQ(*r.destination_hash_at_start, r.source_guest->HashMemory())
        << "destination RAM differs from the source's";
    EXPECT_GE(r.steps_before, steps) << "the workload went backwards";
    steps = r.steps_before;

    guest = r.destination_vmm->TakeGuest();
    ASSERT_EQ(guest->workload().counts().steps, steps);
    ASSERT_OK(guest->RunSteps(4));
    ASSERT_OK(guest->workload().VerifyAll());
    for (uint32_t q = 0; q < guest->driver().num_queues(); ++q) {
      ASSERT_EQ(guest->driver().queue(q).bad_used_count(), 0u);
    }
    steps += 4;

    // The old source lets go of its daemon, which exits; a fresh daemon
    // serves that socket for the way back.
    migrated->reset();
    absl::StatusOr<int> exited = daemons[here]->WaitForExit(absl::Seconds(10));
    ASSERT_TRUE(exited.ok()) << exited.status() << "\n" << daemons[here]->Log();
    EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0)
        << daemons[here]->Log();
    auto fresh = FsDaemon::Start(shared_dir(), sockets[here]);
    ASSERT_TRUE(fresh.ok()) << fresh.status();
    daemons[here] = *std::move(fresh);

    ASSERT_OK(guest->StartVcpu());
    here = there;
  }
  ASSERT_OK(guest->Pause());
  ASSERT_OK(guest->workload().VerifyAll());
  const absl::Duration took = absl::Now() - start;
  RecordProperty("final_steps",
                 static_cast<int>(guest->workload().counts().steps));
  RecordProperty("seconds", absl::StrCat(absl::ToDoubleSeconds(took)));
  std::printf("%u migrations, %llu workload steps, %.1f s\n", iterations,
              static_cast<unsigned long long>(guest->workload().counts().steps),
              absl::ToDoubleSeconds(took));
}

}  // namespace
}  // namespace vhostmig::reliability
