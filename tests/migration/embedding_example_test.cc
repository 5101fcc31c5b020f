// The complete example of docs/embedding.md, compiled and run so the page
// cannot rot: a VMM (here the synthetic guest) migrating itself between two
// vhost-user-fs back-ends in one process.
#include <signal.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "base/status_macros.h"
#include "fs_device/virtio_fs_device.h"
#include "gtest/gtest.h"
#include "guest/synthetic_guest.h"
#include "migration/destination_migration.h"
#include "migration/in_process_transport.h"
#include "migration/source_migration.h"
#include "migration/synthetic_vmm.h"
#include "vhost/backend/server.h"

namespace {

using namespace vhostmig;  // NOLINT: example brevity

// --- begin example ---
absl::Status MigrateOnce(const std::string& source_socket,
                         const std::string& destination_socket) {
  // The running VM: RAM, the device attached over vhost-user, a vCPU.
  guest::SyntheticGuestOptions guest_options;
  ASSIGN_OR_RETURN(auto vm,
                   guest::SyntheticGuest::Create(source_socket, guest_options));
  RETURN_IF_ERROR(vm->StartVcpu());

  // The incoming VM: same RAM layout, device connected (SET_OWNER,
  // SET_PROTOCOL_FEATURES) but not configured.
  ASSIGN_OR_RETURN(auto incoming, guest::SyntheticGuest::CreateIncoming(
                                      destination_socket, guest_options));
  migration::SyntheticDestinationVmm destination_vmm(std::move(incoming));
  migration::SyntheticSourceVmm source_vmm(vm.get());

  // Source and destination in one process; a gRPC stream takes this
  // place between hosts.
  auto [source_end, destination_end] =
      migration::InProcessTransport::CreatePair();

  migration::SourceOptions options;
  options.downtime_budget = absl::Milliseconds(300);
  options.observer = [](const migration::SourceProgress& p) {
    std::fprintf(stderr, "%s round %u sent %llu remaining %llu state %llu\n",
                 migration::PhaseName(p.phase), p.round,
                 static_cast<unsigned long long>(p.pages_sent),
                 static_cast<unsigned long long>(p.pages_remaining),
                 static_cast<unsigned long long>(p.state_bytes));
  };
  migration::SourceMigration source(&source_vmm, source_end.get(), options);
  migration::DestinationMigration destination(&destination_vmm,
                                              destination_end.get());

  absl::Status destination_status;
  std::thread destination_thread(
      [&] { destination_status = destination.Run(); });
  absl::Status source_status = source.Run();  // source.Cancel() from anywhere
  destination_thread.join();
  RETURN_IF_ERROR(source_status);       // not OK: the source runs again
  RETURN_IF_ERROR(destination_status);  // OK: the guest runs there now

  // Handed over: the source stays paused; the destination's vCPU runs.
  guest::SyntheticGuest& moved = *destination_vmm.guest();
  RETURN_IF_ERROR(moved.Pause());
  return moved.workload().VerifyAll();
}
// --- end example ---

TEST(EmbeddingExampleTest, TheDocumentedExampleMigratesAndVerifies) {
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/vhostmig-embed-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  std::filesystem::create_directory(root + "/shared");
  fs::FsConfig config;
  config.shared_dir = root + "/shared";
  auto a = fs::VirtioFsDevice::Create(config, {});
  auto b = fs::VirtioFsDevice::Create(config, {});
  ASSERT_TRUE(a.ok() && b.ok());
  vhost::BackendServer sa(a->get()), sb(b->get());
  ASSERT_TRUE(sa.Listen(root + "/a.sock").ok());
  ASSERT_TRUE(sb.Listen(root + "/b.sock").ok());
  std::thread ta([&] { (void)sa.Serve(); });
  std::thread tb([&] { (void)sb.Serve(); });
  const absl::Status s = MigrateOnce(root + "/a.sock", root + "/b.sock");
  sa.Shutdown();
  sb.Shutdown();
  ta.join();
  tb.join();
  std::filesystem::remove_all(root);
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
