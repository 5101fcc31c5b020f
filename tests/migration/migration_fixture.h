// Shared set-up for the migration tests: vhost-user-fs back-ends on both
// sides of a migration of the synthetic guest, all on one machine.
//
// Back-ends: ours in-process (a BackendServer serving fs::VirtioFsDevice on
// a socket, on its own thread; optionally with the legacy ring-disabling
// bug), or a real peer process (virtiofsd 1.13, the C virtiofsd; skipped
// with the reason when absent or not root). Source and destination serve
// the same shared directory, as a migration between hosts sharing storage.
//
// MigrationRun wires a source SyntheticGuest, an incoming one, an
// in-process transport and both coordinators, runs the destination on a
// thread and the source on the test thread. Every wait is bounded by the
// coordinators' own timeouts.
#ifndef VHOSTMIG_TESTS_MIGRATION_MIGRATION_FIXTURE_H_
#define VHOSTMIG_TESTS_MIGRATION_MIGRATION_FIXTURE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "guest/synthetic_guest.h"
#include "migration/destination_migration.h"
#include "migration/in_process_transport.h"
#include "migration/source_migration.h"
#include "migration/synthetic_vmm.h"
#include "tests/peers/peer_backend.h"

namespace vhostmig::migration::testing {

enum class BackendKind {
  kOurs,          // fs::VirtioFsDevice on our BackendServer
  kOursLegacy,    // the same, disabling rings on SET_FEATURES (old bug)
  kVirtiofsd113,  // the Rust virtiofsd with DEVICE_STATE
  kCVirtiofsd,    // the C virtiofsd, without DEVICE_STATE
};

std::string KindName(BackendKind kind);

// A running back-end; stops it when destroyed.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const std::string& socket_path() const = 0;
};

class MigrationTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Skips (returns false with *why set) when `kind` cannot run here.
  static bool Available(BackendKind kind, std::string* why);
  absl::StatusOr<std::unique_ptr<Backend>> StartBackend(
      BackendKind kind, const std::string& name);
  const std::string& shared_dir() const { return shared_dir_; }

  std::string root_;
  std::string shared_dir_;
};

// One migration of a synthetic guest from `source` to a fresh guest on
// `destination`.
struct MigrationRun {
  std::unique_ptr<guest::SyntheticGuest> source_guest;
  std::unique_ptr<SyntheticDestinationVmm> destination_vmm;
  std::unique_ptr<InProcessTransport> source_end;
  std::unique_ptr<InProcessTransport> destination_end;
  // What RunOptions::wrap_*_end made of the ends (null when not wrapped).
  std::unique_ptr<MemoryTransport> source_wrapper;
  std::unique_ptr<MemoryTransport> destination_wrapper;
  std::unique_ptr<SyntheticSourceVmm> source_vmm;
  std::unique_ptr<SourceMigration> source;
  std::unique_ptr<DestinationMigration> destination;
  absl::Status source_status;
  absl::Status destination_status;
  // Hashes of guest RAM: the destination's taken at Start (after Commit,
  // before its rings run), the source's after Run (still paused).
  std::optional<uint64_t> destination_hash_at_start;
  uint64_t steps_before = 0;  // workload steps when the source paused
  std::optional<bool> cancel_accepted;
};

struct RunOptions {
  guest::SyntheticGuestOptions guest;
  SourceOptions source;
  DestinationOptions destination;
  uint64_t warmup_steps = 16;  // synchronous steps before the migration
  bool run_vcpu = true;        // the workload runs during pre-copy
  // Called on every progress event; returning true cancels that side
  // (the result of Cancel() lands in MigrationRun::cancel_accepted).
  std::function<bool(const SourceProgress&)> cancel_source_when;
  std::function<bool(const DestinationProgress&)> cancel_destination_when;
  // Wrap an end of the in-process transport (e.g. fault injection,
  // tests/reliability/fault_transport.h); the coordinator of that side
  // uses the wrapper, which must forward to the end it is given.
  std::function<std::unique_ptr<MemoryTransport>(MemoryTransport*)>
      wrap_source_end;
  std::function<std::unique_ptr<MemoryTransport>(MemoryTransport*)>
      wrap_destination_end;
  // Each direction's flow-control window (InProcessTransport::CreatePair).
  uint64_t window_bytes = 8ull << 20;
  // Called once everything is wired, before either side runs (e.g. to
  // reach the incoming guest from an observer).
  std::function<void(MigrationRun&)> before_run;
};

// Creates the source guest (on `source`), runs the warm-up, starts the
// vCPU, creates the incoming guest (on `destination`) and runs both sides
// to completion. Failures to set up are returned; the migration's outcome
// is in the run's statuses.
absl::StatusOr<std::unique_ptr<MigrationRun>> Migrate(
    const std::string& source_socket, const std::string& destination_socket,
    RunOptions options);

// The same with a source guest that already runs (vCPU started or not, as
// the caller left it; options.warmup_steps and run_vcpu are not used), e.g.
// the guest a previous migration delivered, for back-and-forth migrations.
absl::StatusOr<std::unique_ptr<MigrationRun>> MigrateGuest(
    std::unique_ptr<guest::SyntheticGuest> source_guest,
    const std::string& destination_socket, RunOptions options);

}  // namespace vhostmig::migration::testing

#endif  // VHOSTMIG_TESTS_MIGRATION_MIGRATION_FIXTURE_H_
