// The fault matrix (issue 7, docs/reliability.md): a migration of the
// synthetic guest between two vhost-user-fs daemon *processes*, with one
// fault injected per cell at one phase, and the outcome written down for
// every cell and checked. Every cell runs with our daemon
// (//fs_device:vhost-user-fs) on both sides (Cells/*); the cells that say
// something about a back-end also run with virtiofsd 1.13 on both sides
// (Virtiofsd113Cells/*, --migration-mode=find-paths
// --migration-on-error=abort; skipped with the reason when the peer or root
// is missing), with the outcome written down for it.
//
// Faults: a back-end killed (SIGKILL) on the source or the destination; the
// front-end disconnecting (its socket shut down) on either side; the
// device-state pipe closed early (StatePipeProxy); the state stream
// truncated or corrupted, page data corrupted in transit, and the
// destination slow to consume (FaultTransport). Phases: the source's Setup
// … Handover and the destination's Prepare … Start, each reached through
// the coordinators' progress observers (the fault is injected on the
// coordinator's thread when it enters the phase).
//
// Outcomes:
//   Completes         both sides OK; destination RAM = source RAM; the
//                     workload continues on the destination and verifies
//                     every block, journal record and page-cache slot.
//   SourceResumes     the source reports the failure, is not committed and
//                     runs again (LOG_ALL clear, rings enabled, the
//                     workload continues and verifies everything); the
//                     destination is torn down.
//   SourceDeviceLost  the source's back-end is gone: Run reports the failed
//                     step (never OK, Cancelled or Aborted), the destination
//                     is told and torn down, the source guest ends parked —
//                     a guest the coordinator had paused stays paused (it is
//                     never resumed onto rings that could not be
//                     restarted), a running one parks on its first request
//                     that nobody answers — and the shared directory holds
//                     every acknowledged write (checked on the host).
//   DestinationLostAfterCommit  the source handed over (OK, committed,
//                     paused for good), the destination failed to start:
//                     neither runs, and the shared directory holds every
//                     write the source acknowledged. Deciding what to do is
//                     the management layer's job (docs/migration.md).
// In every cell: source and destination never both run, and a daemon whose
// front-end disconnected exits cleanly (it resets its device; like
// virtiofsd it then exits rather than waiting for another front-end — the
// waiting variant is pinned by FrontendDisconnectResetsBackendForNextFrontend).
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/migration/migration_fixture.h"
#include "tests/peers/peer_backend.h"
#include "tests/reliability/fault_transport.h"
#include "tests/reliability/reliability_fixture.h"
#include "tests/reliability/state_pipe_proxy.h"
#include "vhost/protocol/features.h"

namespace vhostmig::reliability {
namespace {

using migration::DestinationPhase;
using migration::DestinationProgress;
using migration::SourcePhase;
using migration::SourceProgress;
using migration::testing::BackendKind;
using migration::testing::KindName;
using migration::testing::MigrationRun;
using migration::testing::RunOptions;

#define ASSERT_OK(expr)                          \
  do {                                           \
    const absl::Status _s = (expr);              \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s; \
  } while (0)

enum class Fault {
  kKillSourceBackend,
  kKillDestinationBackend,
  kDisconnectSourceFrontend,
  kDisconnectDestinationFrontend,
  kCloseSaveStatePipe,           // source's pipe, after 64 bytes
  kCloseLoadStatePipe,           // destination's pipe, after 64 bytes
  kTruncateStateStream,          // DeviceStateEnd still says the full size
  kTruncateStateStreamAndTotal,  // DeviceStateEnd made consistent
  kCorruptStateHeader,           // a byte of chunk 0 flipped
  kCorruptStateBody,             // a byte of chunk 2 (1.13: 1) flipped
  kCorruptPageData,              // a byte of a PageBatch's page data flipped
  kSlowDestination,              // 4 MB/s: still completes
  kStalledDestination,           // 16 KB/s, short timeouts: times out cleanly
};

enum class Outcome {
  kCompletes,
  kSourceResumes,
  kSourceDeviceLost,
  kDestinationLostAfterCommit,
};

struct Cell {
  const char* name;
  Fault fault;
  // Where the fault is injected (neither: from the start, by the transport
  // or the proxy).
  std::optional<SourcePhase> source_phase;
  std::optional<DestinationPhase> destination_phase;
  Outcome expected;  // with our daemon on both sides
  // With virtiofsd 1.13 on both sides; cells without one do not run with
  // it (they test our daemon or the coordinator, not the back-end).
  std::optional<Outcome> virtiofsd113;
};

// The matrix. docs/reliability.md shows the same tables; keep them equal.
const Cell kCells[] = {
    // A back-end killed on the source.
    {"KillSourceBackendInSetup",
     Fault::kKillSourceBackend,
     SourcePhase::kSetup,
     {},
     Outcome::kSourceDeviceLost,
     Outcome::kSourceDeviceLost},
    {"KillSourceBackendInLogStart",
     Fault::kKillSourceBackend,
     SourcePhase::kLogStart,
     {},
     Outcome::kSourceDeviceLost,
     Outcome::kSourceDeviceLost},
    {"KillSourceBackendInPreCopy",
     Fault::kKillSourceBackend,
     SourcePhase::kPreCopy,
     {},
     Outcome::kSourceDeviceLost,
     Outcome::kSourceDeviceLost},
    {"KillSourceBackendInStop",
     Fault::kKillSourceBackend,
     SourcePhase::kStop,
     {},
     Outcome::kSourceDeviceLost,
     Outcome::kSourceDeviceLost},
    {"KillSourceBackendInFinalSync",
     Fault::kKillSourceBackend,
     SourcePhase::kFinalSync,
     {},
     Outcome::kSourceDeviceLost,
     Outcome::kSourceDeviceLost},
    {"KillSourceBackendInSaveState",
     Fault::kKillSourceBackend,
     SourcePhase::kSaveState,
     {},
     Outcome::kSourceDeviceLost,
     Outcome::kSourceDeviceLost},
    {"KillSourceBackendInCheck",
     Fault::kKillSourceBackend,
     SourcePhase::kCheck,
     {},
     Outcome::kSourceDeviceLost,
     Outcome::kSourceDeviceLost},
    {"KillSourceBackendInHandover",
     Fault::kKillSourceBackend,
     SourcePhase::kHandover,
     {},
     Outcome::kCompletes,
     Outcome::kCompletes},
    // A back-end killed on the destination.
    {"KillDestinationBackendInPrepare",
     Fault::kKillDestinationBackend,
     {},
     DestinationPhase::kPrepare,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"KillDestinationBackendInReceivePages",
     Fault::kKillDestinationBackend,
     {},
     DestinationPhase::kReceivePages,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"KillDestinationBackendInLoadState",
     Fault::kKillDestinationBackend,
     {},
     DestinationPhase::kLoadState,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"KillDestinationBackendInCheck",
     Fault::kKillDestinationBackend,
     {},
     DestinationPhase::kCheck,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"KillDestinationBackendInStart",
     Fault::kKillDestinationBackend,
     {},
     DestinationPhase::kStart,
     Outcome::kDestinationLostAfterCommit,
     Outcome::kDestinationLostAfterCommit},
    // The source's front-end disconnects from its back-end.
    {"DisconnectSourceFrontendInSetup",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kSetup,
     {},
     Outcome::kSourceDeviceLost},
    {"DisconnectSourceFrontendInLogStart",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kLogStart,
     {},
     Outcome::kSourceDeviceLost},
    {"DisconnectSourceFrontendInPreCopy",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kPreCopy,
     {},
     Outcome::kSourceDeviceLost},
    {"DisconnectSourceFrontendInStop",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kStop,
     {},
     Outcome::kSourceDeviceLost},
    {"DisconnectSourceFrontendInFinalSync",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kFinalSync,
     {},
     Outcome::kSourceDeviceLost},
    {"DisconnectSourceFrontendInSaveState",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kSaveState,
     {},
     Outcome::kSourceDeviceLost},
    {"DisconnectSourceFrontendInCheck",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kCheck,
     {},
     Outcome::kSourceDeviceLost},
    {"DisconnectSourceFrontendInHandover",
     Fault::kDisconnectSourceFrontend,
     SourcePhase::kHandover,
     {},
     Outcome::kCompletes},
    // The destination's front-end disconnects from its back-end.
    {"DisconnectDestinationFrontendInPrepare",
     Fault::kDisconnectDestinationFrontend,
     {},
     DestinationPhase::kPrepare,
     Outcome::kSourceResumes},
    {"DisconnectDestinationFrontendInReceivePages",
     Fault::kDisconnectDestinationFrontend,
     {},
     DestinationPhase::kReceivePages,
     Outcome::kSourceResumes},
    {"DisconnectDestinationFrontendInLoadState",
     Fault::kDisconnectDestinationFrontend,
     {},
     DestinationPhase::kLoadState,
     Outcome::kSourceResumes},
    {"DisconnectDestinationFrontendInCheck",
     Fault::kDisconnectDestinationFrontend,
     {},
     DestinationPhase::kCheck,
     Outcome::kSourceResumes},
    {"DisconnectDestinationFrontendInStart",
     Fault::kDisconnectDestinationFrontend,
     {},
     DestinationPhase::kStart,
     Outcome::kDestinationLostAfterCommit},
    // The device-state stream (SaveState on the source, LoadState on the
    // destination).
    {"StatePipeClosedEarlyOnSource",
     Fault::kCloseSaveStatePipe,
     SourcePhase::kSaveState,
     {},
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"StatePipeClosedEarlyOnDestination",
     Fault::kCloseLoadStatePipe,
     {},
     DestinationPhase::kLoadState,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"StateStreamTruncated",
     Fault::kTruncateStateStream,
     {},
     DestinationPhase::kLoadState,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"StateStreamTruncatedWithConsistentTotal",
     Fault::kTruncateStateStreamAndTotal,
     {},
     DestinationPhase::kLoadState,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"StateStreamHeaderCorrupted",
     Fault::kCorruptStateHeader,
     {},
     DestinationPhase::kLoadState,
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"StateStreamBodyCorrupted",
     Fault::kCorruptStateBody,
     {},
     DestinationPhase::kLoadState,
     Outcome::kSourceResumes,
     // virtiofsd 1.13's state has no checksum: it loads the damaged bytes
     // and CHECK_DEVICE_STATE succeeds. The coordinator's digest of the
     // whole stream (DeviceStateEnd::crc32c) fails the migration before
     // Ready. Without it the handover completed and the guest's next
     // request on the damaged handle failed with EBADF.
     Outcome::kSourceResumes},
    // Page data damaged in transit (a byte of the first data extent of the
    // next PageBatch after the phase began): the extent's digest no longer
    // matches; the destination rejects it before anything lands.
    {"PageDataCorruptedInPreCopy",
     Fault::kCorruptPageData,
     SourcePhase::kPreCopy,
     {},
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    {"PageDataCorruptedInFinalSync",
     Fault::kCorruptPageData,
     SourcePhase::kFinalSync,
     {},
     Outcome::kSourceResumes,
     Outcome::kSourceResumes},
    // The destination slow to consume (every phase).
    {"SlowDestinationStillCompletes",
     Fault::kSlowDestination,
     {},
     {},
     Outcome::kCompletes},
    {"StalledDestinationTimesOutCleanly",
     Fault::kStalledDestination,
     {},
     {},
     Outcome::kSourceResumes},
};

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kCompletes:
      return "Completes";
    case Outcome::kSourceResumes:
      return "SourceResumes";
    case Outcome::kSourceDeviceLost:
      return "SourceDeviceLost";
    case Outcome::kDestinationLostAfterCommit:
      return "DestinationLostAfterCommit";
  }
  return "?";
}

bool IsKill(Fault f) {
  return f == Fault::kKillSourceBackend || f == Fault::kKillDestinationBackend;
}
bool IsDisconnect(Fault f) {
  return f == Fault::kDisconnectSourceFrontend ||
         f == Fault::kDisconnectDestinationFrontend;
}
bool OnSource(Fault f) {
  return f == Fault::kKillSourceBackend ||
         f == Fault::kDisconnectSourceFrontend ||
         f == Fault::kCloseSaveStatePipe;
}

// A back-end process a cell can kill: our daemon or virtiofsd 1.13.
class Daemon {
 public:
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      BackendKind kind, const std::string& shared_dir,
      const std::string& socket_path) {
    std::unique_ptr<Daemon> d(new Daemon());
    if (kind == BackendKind::kVirtiofsd113) {
      auto peer = vhostmig::testing::PeerBackend::Start(
          vhostmig::testing::PeerKind::kVirtiofsd113, shared_dir, socket_path,
          {"--migration-mode=find-paths", "--migration-on-error=abort"});
      if (!peer.ok()) return peer.status();
      d->peer_ = *std::move(peer);
    } else {
      auto ours = FsDaemon::Start(shared_dir, socket_path);
      if (!ours.ok()) return ours.status();
      d->ours_ = *std::move(ours);
    }
    return d;
  }

  const std::string& socket_path() const {
    return ours_ ? ours_->socket_path() : peer_->socket_path();
  }
  // SIGKILL, then reaps it (bounded).
  absl::Status Kill() {
    if (ours_) return ours_->Kill();
    if (::kill(peer_->pid(), SIGKILL) != 0) {
      return absl::ErrnoToStatus(errno, "kill virtiofsd");
    }
    return peer_->WaitForExit(absl::Seconds(5)).status();
  }
  absl::StatusOr<int> WaitForExit(absl::Duration timeout) {
    return ours_ ? ours_->WaitForExit(timeout) : peer_->WaitForExit(timeout);
  }
  std::string Log() const {
    if (ours_) return ours_->Log();
    std::ifstream in(peer_->log_path());
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  Daemon() = default;
  std::unique_ptr<FsDaemon> ours_;
  std::unique_ptr<vhostmig::testing::PeerBackend> peer_;
};

class FaultMatrixTest : public migration::testing::MigrationTest,
                        public ::testing::WithParamInterface<Cell> {
 protected:
  void SetUp() override {
    MigrationTest::SetUp();
    workload_.files = 4;
    workload_.max_blocks = 16;
  }

  RunOptions Options() {
    RunOptions o;
    o.guest.workload = workload_;
    // A request the lost device never answers fails the vCPU's step soon.
    o.guest.timeout = absl::Seconds(2);
    o.warmup_steps = 12;
    o.source.min_rounds = 2;
    o.source.state_chunk_bytes = 64;  // several chunks to damage
    o.source.message_timeout = absl::Seconds(5);
    o.source.ready_timeout = absl::Seconds(15);
    o.source.state_timeout = absl::Seconds(10);
    o.destination.message_timeout = absl::Seconds(15);
    o.destination.state_timeout = absl::Seconds(10);
    return o;
  }

  // Runs `cell` with `kind` on both sides and checks that the outcome is
  // `expected`.
  void RunCell(const Cell& cell, BackendKind kind, Outcome expected);

  guest::FsWorkloadOptions workload_;
};

void FaultMatrixTest::RunCell(const Cell& cell, BackendKind kind,
                              Outcome expected) {
  RecordProperty("backend", KindName(kind));
  RecordProperty("expected", OutcomeName(expected));
  // Daemons (processes, so they can be killed) on one shared directory.
  auto source_daemon =
      Daemon::Start(kind, shared_dir(), absl::StrCat(root_, "/src.sock"));
  ASSERT_TRUE(source_daemon.ok()) << source_daemon.status();
  auto destination_daemon =
      Daemon::Start(kind, shared_dir(), absl::StrCat(root_, "/dst.sock"));
  ASSERT_TRUE(destination_daemon.ok()) << destination_daemon.status();
  Daemon& src = **source_daemon;
  Daemon& dst = **destination_daemon;
  std::string source_socket = src.socket_path();
  std::string destination_socket = dst.socket_path();

  std::unique_ptr<StatePipeProxy> proxy;
  if (cell.fault == Fault::kCloseSaveStatePipe ||
      cell.fault == Fault::kCloseLoadStatePipe) {
    const bool source = cell.fault == Fault::kCloseSaveStatePipe;
    auto p = StatePipeProxy::Start(absl::StrCat(root_, "/proxy.sock"),
                                   source ? source_socket : destination_socket,
                                   /*pass_bytes=*/64);
    ASSERT_TRUE(p.ok()) << p.status();
    proxy = *std::move(p);
    (source ? source_socket : destination_socket) = proxy->socket_path();
  }

  RunOptions o = Options();
  FaultPlan plan;
  bool wrap_source = false;
  bool wrap_destination = false;
  // The stream damaged in its middle: this workload's state is ~200 bytes
  // with our daemon (64-byte chunks 0-3) and 100 with virtiofsd 1.13
  // (chunks 0-1: its inodes' names, then its handles).
  const bool short_state = kind == BackendKind::kVirtiofsd113;
  switch (cell.fault) {
    case Fault::kTruncateStateStream:
    case Fault::kTruncateStateStreamAndTotal:
      plan.truncate_state_at = short_state ? 50 : 100;
      plan.rewrite_state_total =
          cell.fault == Fault::kTruncateStateStreamAndTotal;
      wrap_source = true;
      break;
    case Fault::kCorruptStateHeader:
      plan.corrupt_state_chunk = 0;
      plan.corrupt_offset = 5;
      wrap_source = true;
      break;
    case Fault::kCorruptStateBody:
      plan.corrupt_state_chunk = short_state ? 1 : 2;
      plan.corrupt_offset = 17;
      wrap_source = true;
      break;
    case Fault::kCorruptPageData:
      plan.corrupt_offset = 4096 + 123;  // the second page, if it has one
      wrap_source = true;
      break;
    case Fault::kSlowDestination:
      plan.receive_bytes_per_s = 4 << 20;
      o.window_bytes = 256 << 10;
      o.source.batch_bytes = 64 << 10;
      wrap_destination = true;
      break;
    case Fault::kStalledDestination:
      plan.receive_bytes_per_s = 16 << 10;
      o.window_bytes = 128 << 10;
      o.source.batch_bytes = 64 << 10;
      o.source.message_timeout = absl::Milliseconds(500);
      o.destination.message_timeout = absl::Seconds(2);
      wrap_destination = true;
      break;
    default:
      break;
  }
  FaultTransport* fault_transport = nullptr;
  auto wrap = [&plan, &fault_transport](migration::MemoryTransport* inner) {
    auto t = std::make_unique<FaultTransport>(inner, plan);
    fault_transport = t.get();
    return std::unique_ptr<migration::MemoryTransport>(std::move(t));
  };
  if (wrap_source) o.wrap_source_end = wrap;
  if (wrap_destination) o.wrap_destination_end = wrap;

  // Phase-triggered faults, injected once on the coordinator's thread.
  MigrationRun* run = nullptr;
  o.before_run = [&run](MigrationRun& r) { run = &r; };
  bool injected = false;
  absl::Status inject_status;
  auto inject = [&] {
    if (injected) return;
    injected = true;
    switch (cell.fault) {
      case Fault::kKillSourceBackend:
        inject_status = src.Kill();
        break;
      case Fault::kKillDestinationBackend:
        inject_status = dst.Kill();
        break;
      case Fault::kDisconnectSourceFrontend:
        ::shutdown(run->source_guest->device().frontend().socket(), SHUT_RDWR);
        break;
      case Fault::kDisconnectDestinationFrontend:
        ::shutdown(run->destination_vmm->guest()->device().frontend().socket(),
                   SHUT_RDWR);
        break;
      case Fault::kCorruptPageData:
        fault_transport->CorruptNextPageBatch();
        break;
      default:
        break;  // the proxy or the transport does it
    }
  };
  if (cell.source_phase.has_value()) {
    o.source.observer = [&, at = *cell.source_phase](const SourceProgress& p) {
      if (p.phase == at) inject();
    };
  }
  if (cell.destination_phase.has_value()) {
    o.destination.observer =
        [&, at = *cell.destination_phase](const DestinationProgress& p) {
          if (p.phase == at) inject();
        };
  }

  auto migrated =
      migration::testing::Migrate(source_socket, destination_socket, o);
  ASSERT_TRUE(migrated.ok()) << migrated.status();
  MigrationRun& r = **migrated;
  ASSERT_OK(inject_status);
  if (cell.source_phase.has_value() || cell.destination_phase.has_value()) {
    ASSERT_TRUE(injected) << "the phase never came";
  }
  // The fault that was asked for really happened.
  if (fault_transport != nullptr) {
    const FaultsInjected f = fault_transport->injected();
    switch (cell.fault) {
      case Fault::kTruncateStateStream:
        EXPECT_GT(f.state_bytes_dropped, 0u) << "state shorter than the cut";
        break;
      case Fault::kTruncateStateStreamAndTotal:
        EXPECT_TRUE(f.state_total_rewritten);
        break;
      case Fault::kCorruptStateHeader:
        EXPECT_EQ(f.state_chunks_corrupted, 1u);
        break;
      case Fault::kCorruptStateBody:
        EXPECT_EQ(f.state_chunks_corrupted, 1u);
        // Whatever the back-end made of the bytes, the load fails before
        // Ready: the stream's digest (DataLoss), or our loader first, which
        // refuses the frame and closes its pipe (the coordinator's write
        // then gets EPIPE) or fails CHECK_DEVICE_STATE, whichever the
        // timing gives.
        EXPECT_TRUE(
            absl::IsDataLoss(r.destination_status) ||
            absl::StrContains(r.destination_status.message(),
                              "CHECK_DEVICE_STATE") ||
            absl::StrContains(r.destination_status.message(), "Broken pipe"))
            << r.destination_status;
        RecordProperty("destination_error", r.destination_status.ToString());
        break;
      case Fault::kCorruptPageData: {
        ASSERT_EQ(f.page_extents_corrupted, 1u)
            << "no page data was sent after the phase began";
        RecordProperty("corrupted_round",
                       static_cast<int>(f.corrupted_page_round));
        // Noticed by the digest, naming the extent, before handover.
        EXPECT_TRUE(absl::IsDataLoss(r.destination_status))
            << r.destination_status;
        const std::string where =
            absl::StrCat("PageBatch of round ", f.corrupted_page_round);
        const std::string what =
            absl::StrCat("page extent at page ", f.corrupted_first_page, " (");
        for (const absl::Status& s : {r.destination_status, r.source_status}) {
          EXPECT_TRUE(absl::StrContains(s.message(), where)) << s;
          EXPECT_TRUE(absl::StrContains(s.message(), what)) << s;
          EXPECT_TRUE(absl::StrContains(s.message(), "damaged in transit"))
              << s;
        }
        // The source learnt it from the destination's Abort.
        EXPECT_TRUE(absl::IsAborted(r.source_status)) << r.source_status;
        break;
      }
      default:
        EXPECT_GT(f.throttled_for, absl::ZeroDuration());
    }
    RecordProperty(
        "throttled_ms",
        static_cast<int>(absl::ToInt64Milliseconds(f.throttled_for)));
  }
  if (proxy != nullptr) {
    EXPECT_TRUE(proxy->cut()) << "the state fit in the bytes let through";
  }
  RecordProperty("source_status", r.source_status.ToString());
  RecordProperty("destination_status", r.destination_status.ToString());
  RecordProperty("state_bytes",
                 static_cast<int>(r.source->progress().state_bytes));

  // Never both running.
  guest::SyntheticGuest& g = *r.source_guest;
  EXPECT_FALSE(!g.paused() && r.destination_status.ok())
      << "source and destination both run";
  if (r.source->committed()) EXPECT_TRUE(g.paused());

  switch (expected) {
    case Outcome::kCompletes: {
      ASSERT_OK(r.source_status);
      ASSERT_OK(r.destination_status);
      EXPECT_TRUE(r.source->committed());
      ASSERT_TRUE(r.destination_hash_at_start.has_value());
      EXPECT_EQ(*r.destination_hash_at_start, g.HashMemory())
          << "destination RAM differs from the source's";
      guest::SyntheticGuest& d = *r.destination_vmm->guest();
      EXPECT_EQ(d.workload().counts().steps, r.steps_before);
      ASSERT_OK(d.RunSteps(16));
      ASSERT_OK(d.workload().VerifyAll());
      for (uint32_t q = 0; q < d.driver().num_queues(); ++q) {
        EXPECT_EQ(d.driver().queue(q).bad_used_count(), 0u);
      }
      break;
    }
    case Outcome::kSourceResumes: {
      EXPECT_FALSE(r.source_status.ok());
      EXPECT_FALSE(r.source->committed());
      EXPECT_FALSE(r.destination_status.ok());
      EXPECT_EQ(r.destination_vmm->guest(), nullptr)
          << "the destination was not torn down";
      if (cell.fault == Fault::kStalledDestination) {
        // Whichever side's timeout fires first: the source's send, or the
        // destination's wait (the source then gets its Abort).
        EXPECT_TRUE(
            absl::IsDeadlineExceeded(r.source_status) ||
            (absl::IsAborted(r.source_status) &&
             absl::StrContains(r.source_status.message(), "DEADLINE_EXCEEDED")))
            << r.source_status;
      }
      vhost::Frontend& f = g.device().frontend();
      EXPECT_EQ(f.acked_features() & vhost::kLogAllMask, 0u)
          << "LOG_ALL still set";
      EXPECT_EQ(f.enabled_rings().size(), g.driver().num_queues());
      // Resumed (paused() may still read true for a moment while the vCPU
      // thread leaves its parking spot, so it is not asked here).
      EXPECT_TRUE(g.vcpu_status().ok()) << g.vcpu_status();
      ASSERT_OK(g.Pause());
      const uint64_t steps = g.workload().counts().steps;
      ASSERT_OK(g.RunSteps(8));
      EXPECT_EQ(g.workload().counts().steps, steps + 8);
      ASSERT_OK(g.workload().VerifyAll());
      for (uint32_t q = 0; q < g.driver().num_queues(); ++q) {
        EXPECT_EQ(g.driver().queue(q).bad_used_count(), 0u);
      }
      break;
    }
    case Outcome::kSourceDeviceLost: {
      EXPECT_FALSE(r.source_status.ok());
      EXPECT_FALSE(absl::IsCancelled(r.source_status)) << r.source_status;
      EXPECT_FALSE(absl::IsAborted(r.source_status)) << r.source_status;
      EXPECT_FALSE(r.source->committed());
      EXPECT_FALSE(r.destination_status.ok());
      EXPECT_EQ(r.destination_vmm->guest(), nullptr)
          << "the destination was not torn down";
      // Once the coordinator paused the guest it must not resume it onto
      // rings it could not restart.
      if (*cell.source_phase >= SourcePhase::kFinalSync) {
        EXPECT_TRUE(g.paused()) << "a guest without its device was resumed";
        EXPECT_NE(r.source_status.message().find("stays paused"),
                  std::string::npos)
            << r.source_status;
      }
      // A running vCPU parks on its first unanswered request (bounded by
      // the guest's request timeout).
      (void)g.Pause();
      EXPECT_TRUE(g.paused());
      ASSERT_OK(CheckWorkloadFilesOnHost(shared_dir(), workload_,
                                         g.workload().counts().steps));
      break;
    }
    case Outcome::kDestinationLostAfterCommit: {
      ASSERT_OK(r.source_status);
      EXPECT_TRUE(r.source->committed());
      EXPECT_FALSE(r.destination_status.ok());
      EXPECT_TRUE(g.paused());
      ASSERT_OK(
          CheckWorkloadFilesOnHost(shared_dir(), workload_, r.steps_before));
      break;
    }
  }

  // The daemon whose front-end went away reset its device and exited
  // cleanly; a killed one died of SIGKILL.
  if (IsDisconnect(cell.fault)) {
    Daemon& d = OnSource(cell.fault) ? src : dst;
    absl::StatusOr<int> status = d.WaitForExit(absl::Seconds(5));
    ASSERT_TRUE(status.ok()) << status.status() << "\n" << d.Log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << "wait status " << *status << "\n"
        << d.Log();
  }
  if (IsKill(cell.fault)) RecordProperty("killed", "yes");
}

std::string CellName(const ::testing::TestParamInfo<Cell>& info) {
  return info.param.name;
}

TEST_P(FaultMatrixTest, OutcomeIsTheOneWrittenDown) {
  RunCell(GetParam(), BackendKind::kOurs, GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(Cells, FaultMatrixTest, ::testing::ValuesIn(kCells),
                         CellName);

// The same cells with virtiofsd 1.13 on both sides, where one is written
// down for it.
using Virtiofsd113FaultMatrixTest = FaultMatrixTest;

TEST_P(Virtiofsd113FaultMatrixTest, OutcomeIsTheOneWrittenDown) {
  std::string why;
  if (!Available(BackendKind::kVirtiofsd113, &why)) {
    GTEST_SKIP() << "virtiofsd 1.13: " << why;
  }
  RunCell(GetParam(), BackendKind::kVirtiofsd113, *GetParam().virtiofsd113);
}

std::vector<Cell> Virtiofsd113Cells() {
  std::vector<Cell> cells;
  for (const Cell& c : kCells) {
    if (c.virtiofsd113.has_value()) cells.push_back(c);
  }
  return cells;
}

INSTANTIATE_TEST_SUITE_P(Virtiofsd113Cells, Virtiofsd113FaultMatrixTest,
                         ::testing::ValuesIn(Virtiofsd113Cells()), CellName);

// The back-end framework's own contract for a front-end that disconnects in
// the middle of a migration: the session resets the device (rings stopped,
// LOG_ALL and the loaded/saved state forgotten) and, unless told to exit,
// waits for the next front-end, which gets a fresh device.
using BackendResetTest = migration::testing::MigrationTest;

TEST_F(BackendResetTest, FrontendDisconnectResetsBackendForNextFrontend) {
  auto backend = StartBackend(migration::testing::BackendKind::kOurs, "ours");
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto destination =
      StartBackend(migration::testing::BackendKind::kOurs, "dst");
  ASSERT_TRUE(destination.ok()) << destination.status();
  RunOptions o;
  o.guest.timeout = absl::Seconds(2);
  o.source.min_rounds = 2;
  o.source.state_chunk_bytes = 64;
  bool done = false;
  MigrationRun* run = nullptr;
  o.before_run = [&run](MigrationRun& r) { run = &r; };
  o.source.observer = [&](const SourceProgress& p) {
    if (!done && p.phase == SourcePhase::kSaveState) {
      done = true;
      ::shutdown(run->source_guest->device().frontend().socket(), SHUT_RDWR);
    }
  };
  auto migrated = migration::testing::Migrate((*backend)->socket_path(),
                                              (*destination)->socket_path(), o);
  ASSERT_TRUE(migrated.ok()) << migrated.status();
  ASSERT_TRUE(done);
  EXPECT_FALSE((*migrated)->source_status.ok());
  EXPECT_FALSE((*migrated)->source->committed());
  migrated->reset();  // the old guest and its connection go away

  // A new front-end on the same back-end: negotiation from scratch, no
  // LOG_ALL, and a workload that runs and verifies.
  guest::SyntheticGuestOptions go;
  go.workload.seed = 7;  // its own files
  auto fresh = guest::SyntheticGuest::Create((*backend)->socket_path(), go);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ((*fresh)->device().frontend().acked_features() & vhost::kLogAllMask,
            0u);
  ASSERT_OK((*fresh)->RunSteps(24));
  ASSERT_OK((*fresh)->workload().VerifyAll());
}

}  // namespace
}  // namespace vhostmig::reliability
