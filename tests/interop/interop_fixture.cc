#include "tests/interop/interop_fixture.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace vhostmig::interop {

std::string PeerName(PeerKind kind) {
  switch (kind) {
    case PeerKind::kCVirtiofsd:
      return "CVirtiofsd";
    case PeerKind::kVirtiofsd113:
      return "Virtiofsd113";
  }
  return "Unknown";
}

std::string PeerParamName(const ::testing::TestParamInfo<PeerKind>& info) {
  return PeerName(info.param);
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  }
  return s;
}

std::vector<vhost::VringLayout> AttachedGuest::Layouts() const {
  std::vector<vhost::VringLayout> layouts;
  for (uint32_t q = 0; q < driver->num_queues(); ++q) {
    layouts.push_back(driver->QueueLayout(q));
  }
  return layouts;
}

absl::StatusOr<AttachedGuest> AttachGuest(const std::string& socket_path,
                                          const AttachOptions& options) {
  AttachedGuest g;
  // hiprio + one request queue: what both peers serve.
  constexpr uint32_t kQueues = 2;
  ASSIGN_OR_RETURN(g.ram, guest::GuestRam::Create(options.ram));
  ASSIGN_OR_RETURN(g.transport, guest::VhostUserTransport::Create(kQueues));
  ASSIGN_OR_RETURN(g.device, guest::VhostUserDevice::Connect(
                                 socket_path, g.ram.get(), g.transport.get(),
                                 options.device));
  guest::VirtioFsDriverOptions driver_options;
  driver_options.num_request_queues = kQueues - 1;
  driver_options.queue_size = options.queue_size;
  driver_options.event_idx = g.device->event_idx();
  driver_options.indirect_desc = g.device->indirect_desc();
  driver_options.timeout = options.timeout;
  ASSIGN_OR_RETURN(g.driver,
                   guest::VirtioFsDriver::Create(g.ram.get(), g.transport.get(),
                                                 driver_options));
  RETURN_IF_ERROR(g.device->Configure());
  RETURN_IF_ERROR(g.device->StartRings(g.Layouts()));
  return g;
}

std::string PeerTest::WhyUnavailable(PeerKind kind) {
  absl::StatusOr<std::string> path = testing::PeerPath(kind);
  if (!path.ok()) return std::string(path.status().message());
  if (geteuid() != 0) return "the virtiofsd peers need root";
  return "";
}

void PeerTest::SetUp() {
  const std::string why = WhyUnavailable(kind());
  if (!why.empty()) GTEST_SKIP() << PeerName(kind()) << ": " << why;
  char tmpl[] = "/tmp/vhostmig-interop-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  root_ = tmpl;
  shared_dir_ = root_ + "/shared";
  std::error_code ec;
  std::filesystem::create_directory(shared_dir_, ec);
  ASSERT_FALSE(ec) << ec.message();
}

void PeerTest::TearDown() {
  if (root_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(root_, ec);
}

absl::StatusOr<std::unique_ptr<PeerBackend>> PeerTest::StartPeer(
    absl::string_view name, const std::vector<std::string>& extra_args) {
  return StartPeer(kind(), name, extra_args);
}

absl::StatusOr<std::unique_ptr<PeerBackend>> PeerTest::StartPeer(
    PeerKind kind, absl::string_view name,
    const std::vector<std::string>& extra_args) {
  return PeerBackend::Start(
      kind, shared_dir_, absl::StrCat(root_, "/", name, ".sock"), extra_args);
}

void PeerTest::WriteSharedFile(absl::string_view name,
                               absl::string_view contents) {
  std::ofstream out(absl::StrCat(shared_dir_, "/", name), std::ios::binary);
  out.write(contents.data(), contents.size());
  ASSERT_TRUE(out.good()) << "writing " << name;
}

std::string PeerTest::PeerLog(const PeerBackend& peer) {
  std::ifstream in(peer.log_path());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace vhostmig::interop
