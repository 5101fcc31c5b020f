#include "tests/migration/migration_fixture.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "fs_device/fs_config.h"
#include "fs_device/virtio_fs_device.h"
#include "vhost/backend/server.h"

namespace vhostmig::migration::testing {
namespace {

using ::vhostmig::testing::PeerBackend;
using ::vhostmig::testing::PeerKind;

class InProcessBackend : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<Backend>> Start(
      const std::string& shared_dir, const std::string& socket_path,
      bool legacy) {
    std::unique_ptr<InProcessBackend> b(new InProcessBackend());
    b->socket_path_ = socket_path;
    fs::FsConfig config;
    config.shared_dir = shared_dir;
    ASSIGN_OR_RETURN(b->device_, fs::VirtioFsDevice::Create(config, {}));
    vhost::BackendOptions options;
    options.legacy_disable_rings_on_set_features = legacy;
    options.log = [](const std::string&) {};
    b->server_ =
        std::make_unique<vhost::BackendServer>(b->device_.get(), options);
    RETURN_IF_ERROR(b->server_->Listen(socket_path));
    b->thread_ = std::thread([s = b->server_.get()] { (void)s->Serve(); });
    return std::unique_ptr<Backend>(std::move(b));
  }
  ~InProcessBackend() override {
    server_->Shutdown();
    thread_.join();
  }
  const std::string& socket_path() const override { return socket_path_; }

 private:
  InProcessBackend() = default;
  std::string socket_path_;
  std::unique_ptr<fs::VirtioFsDevice> device_;
  std::unique_ptr<vhost::BackendServer> server_;
  std::thread thread_;
};

class PeerProcess : public Backend {
 public:
  explicit PeerProcess(std::unique_ptr<PeerBackend> peer)
      : peer_(std::move(peer)) {}
  const std::string& socket_path() const override {
    return peer_->socket_path();
  }

 private:
  std::unique_ptr<PeerBackend> peer_;
};

}  // namespace

std::string KindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kOurs:
      return "Ours";
    case BackendKind::kOursLegacy:
      return "OursLegacy";
    case BackendKind::kVirtiofsd113:
      return "Virtiofsd113";
    case BackendKind::kCVirtiofsd:
      return "CVirtiofsd";
  }
  return "?";
}

void MigrationTest::SetUp() {
  // The in-process back-end writes device-state pipes (server.h).
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/vhostmig-mig-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  root_ = tmpl;
  shared_dir_ = root_ + "/shared";
  std::error_code ec;
  std::filesystem::create_directory(shared_dir_, ec);
  ASSERT_FALSE(ec) << ec.message();
}

void MigrationTest::TearDown() {
  if (root_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(root_, ec);
}

bool MigrationTest::Available(BackendKind kind, std::string* why) {
  if (kind == BackendKind::kOurs || kind == BackendKind::kOursLegacy) {
    return true;
  }
  const PeerKind peer = kind == BackendKind::kVirtiofsd113
                            ? PeerKind::kVirtiofsd113
                            : PeerKind::kCVirtiofsd;
  absl::StatusOr<std::string> path = vhostmig::testing::PeerPath(peer);
  if (!path.ok()) {
    *why = std::string(path.status().message());
    return false;
  }
  if (geteuid() != 0) {
    *why = "the virtiofsd peers need root";
    return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<Backend>> MigrationTest::StartBackend(
    BackendKind kind, const std::string& name) {
  const std::string socket = absl::StrCat(root_, "/", name, ".sock");
  switch (kind) {
    case BackendKind::kOurs:
    case BackendKind::kOursLegacy:
      return InProcessBackend::Start(shared_dir_, socket,
                                     kind == BackendKind::kOursLegacy);
    case BackendKind::kVirtiofsd113:
    case BackendKind::kCVirtiofsd: {
      ASSIGN_OR_RETURN(auto peer,
                       PeerBackend::Start(kind == BackendKind::kVirtiofsd113
                                              ? PeerKind::kVirtiofsd113
                                              : PeerKind::kCVirtiofsd,
                                          shared_dir_, socket));
      return std::unique_ptr<Backend>(new PeerProcess(std::move(peer)));
    }
  }
  return absl::InvalidArgumentError("unknown back-end kind");
}

absl::StatusOr<std::unique_ptr<MigrationRun>> Migrate(
    const std::string& source_socket, const std::string& destination_socket,
    RunOptions options) {
  ASSIGN_OR_RETURN(auto source_guest,
                   guest::SyntheticGuest::Create(source_socket, options.guest));
  RETURN_IF_ERROR(source_guest->RunSteps(options.warmup_steps));
  if (options.run_vcpu) RETURN_IF_ERROR(source_guest->StartVcpu());
  return MigrateGuest(std::move(source_guest), destination_socket,
                      std::move(options));
}

absl::StatusOr<std::unique_ptr<MigrationRun>> MigrateGuest(
    std::unique_ptr<guest::SyntheticGuest> source_guest,
    const std::string& destination_socket, RunOptions options) {
  auto run = std::make_unique<MigrationRun>();
  run->source_guest = std::move(source_guest);
  ASSIGN_OR_RETURN(auto incoming, guest::SyntheticGuest::CreateIncoming(
                                      destination_socket, options.guest));
  // The destination's vCPU stays parked after Start: the test drives the
  // workload there deterministically.
  run->destination_vmm = std::make_unique<SyntheticDestinationVmm>(
      std::move(incoming), /*start_vcpu=*/false);
  auto ends = InProcessTransport::CreatePair(options.window_bytes);
  run->source_end = std::move(ends.first);
  run->destination_end = std::move(ends.second);
  MemoryTransport* source_transport = run->source_end.get();
  MemoryTransport* destination_transport = run->destination_end.get();
  if (options.wrap_source_end) {
    run->source_wrapper = options.wrap_source_end(source_transport);
    source_transport = run->source_wrapper.get();
  }
  if (options.wrap_destination_end) {
    run->destination_wrapper =
        options.wrap_destination_end(destination_transport);
    destination_transport = run->destination_wrapper.get();
  }
  run->source_vmm =
      std::make_unique<SyntheticSourceVmm>(run->source_guest.get());

  MigrationRun* r = run.get();
  DestinationObserver user_observer = options.destination.observer;
  auto cancel_destination_when = options.cancel_destination_when;
  options.destination.observer = [r, user_observer, cancel_destination_when](
                                     const DestinationProgress& p) {
    if (p.phase == DestinationPhase::kStart &&
        !r->destination_hash_at_start.has_value() &&
        r->destination_vmm->guest() != nullptr) {
      r->destination_hash_at_start = r->destination_vmm->guest()->HashMemory();
    }
    if (user_observer) user_observer(p);
    if (cancel_destination_when && !r->cancel_accepted.has_value() &&
        cancel_destination_when(p)) {
      r->cancel_accepted = r->destination->Cancel();
    }
  };
  SourceObserver user_source_observer = options.source.observer;
  options.source.observer = [r, user_source_observer,
                             cancel_source_when = options.cancel_source_when](
                                const SourceProgress& p) {
    if (user_source_observer) user_source_observer(p);
    if (cancel_source_when && !r->cancel_accepted.has_value() &&
        cancel_source_when(p)) {
      r->cancel_accepted = r->source->Cancel();
    }
  };
  run->source = std::make_unique<SourceMigration>(
      run->source_vmm.get(), source_transport, options.source);
  run->destination = std::make_unique<DestinationMigration>(
      run->destination_vmm.get(), destination_transport, options.destination);
  if (options.before_run) options.before_run(*run);
  std::thread destination_thread(
      [r] { r->destination_status = r->destination->Run(); });
  run->source_status = run->source->Run();
  destination_thread.join();
  // Read only while the source's vCPU is parked for good.
  if (run->source->committed()) {
    run->steps_before = run->source_guest->workload().counts().steps;
  }
  return run;
}

}  // namespace vhostmig::migration::testing
