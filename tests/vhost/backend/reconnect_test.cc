// A front-end disconnect stops the rings and resets the device; the
// back-end then serves the next connection from scratch.
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/vhost/backend/echo_device.h"
#include "tests/vhost/backend/rig.h"
#include "vhost/backend/server.h"
#include "vhost/frontend/frontend.h"
#include "vhost/protocol/features.h"

namespace vhostmig::vhost::testing {
namespace {

// Not under $TEST_TMPDIR: a unix socket path must fit in sun_path (108
// bytes), which Bazel's output base does not guarantee.
std::string TempSocketPath() {
  static int counter = 0;
  return absl::StrCat("/tmp/vhostmig-reconnect-", getpid(), "-", ++counter,
                      ".sock");
}

TEST(ReconnectTest, DisconnectResetsDeviceAndNextConnectionIsServed) {
  EchoDevice device;
  BackendServer server(&device);
  const std::string path = TempSocketPath();
  {
    absl::Status listen = server.Listen(path);
    ASSERT_TRUE(listen.ok()) << listen;
  }
  absl::Status serve_status;
  std::thread serving([&] { serve_status = server.Serve(); });

  for (int round = 1; round <= 2; ++round) {
    absl::StatusOr<std::unique_ptr<Frontend>> f = Frontend::Connect(path);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_TRUE((*f)->backend_features() & kProtocolFeaturesMask);
    // Every connection starts with nothing acked.
    EXPECT_TRUE((*f)->SetFeatures(device.Features()).ok());
    EXPECT_TRUE((*f)->GetQueueNum().ok());
    f->reset();  // disconnect
    EXPECT_TRUE(device.WaitResets(round, kWait)) << "round " << round;
  }
  server.Shutdown();
  serving.join();
  EXPECT_TRUE(serve_status.ok()) << serve_status;
  EXPECT_EQ(server.connections(), 2u);
}

TEST(ReconnectTest, ExitOnDisconnectMakesServeReturn) {
  EchoDevice device;
  BackendOptions options;
  options.exit_on_disconnect = true;
  BackendServer server(&device, options);
  const std::string path = TempSocketPath() + "2";
  {
    absl::Status listen = server.Listen(path);
    ASSERT_TRUE(listen.ok()) << listen;
  }
  absl::Status serve_status = absl::UnknownError("not run");
  std::thread serving([&] { serve_status = server.Serve(); });
  {
    absl::StatusOr<std::unique_ptr<Frontend>> f = Frontend::Connect(path);
    ASSERT_TRUE(f.ok()) << f.status();
  }
  serving.join();  // returns by itself after the disconnect
  EXPECT_TRUE(serve_status.ok()) << serve_status;
  EXPECT_TRUE(device.WaitResets(1, kWait));
}

TEST(ReconnectTest, DisconnectWithRunningRingStopsIt) {
  auto rig = Rig::Create();
  ASSERT_TRUE(rig.ok());
  ASSERT_TRUE((*rig)->Negotiate().ok());
  ASSERT_TRUE((*rig)->StartRing(0).ok());
  ASSERT_TRUE((*rig)->Submit(0, "x").ok());
  ASSERT_TRUE((*rig)->WaitUsed(0, 1).ok());
  // Joins the server thread, which only returns once every ring worker
  // is stopped; the test's timeout bounds a hang.
  rig->reset();
}

}  // namespace
}  // namespace vhostmig::vhost::testing
