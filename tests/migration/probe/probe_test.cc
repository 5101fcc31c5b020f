// `vhostmig probe` logic against our back-end serving an EchoDevice.
#include "migration/probe/probe.h"

#include <sys/socket.h>

#include <thread>

#include "gtest/gtest.h"
#include "tests/vhost/backend/echo_device.h"
#include "vhost/backend/server.h"

namespace vhostmig::migration {
namespace {

using vhost::testing::EchoDevice;

TEST(ProbeTest, ReportsFeaturesConfigAndMigratability) {
  EchoDevice device;
  vhost::BackendOptions options;
  options.exit_on_disconnect = true;
  vhost::BackendServer server(&device, options);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::thread serving([&] { (void)server.ServeConnection(UniqueFd(sv[1])); });
  {
    auto frontend = vhost::Frontend::FromFd(UniqueFd(sv[0]));
    ASSERT_TRUE(frontend.ok()) << frontend.status();
    absl::StatusOr<ProbeReport> report = Probe(**frontend);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->queue_num, EchoDevice::kNumQueues);
    EXPECT_EQ(report->max_mem_slots, 32u);
    EXPECT_EQ(report->fs_tag, std::string(EchoDevice::kTag));
    EXPECT_EQ(report->fs_num_request_queues, EchoDevice::kNumQueues - 1);
    EXPECT_TRUE(report->dirty_logging);
    EXPECT_TRUE(report->device_state);
    EXPECT_TRUE(report->migratable);
    const std::string text = FormatText(*report);
    EXPECT_NE(text.find("VHOST_F_LOG_ALL"), std::string::npos) << text;
    EXPECT_NE(text.find("DEVICE_STATE"), std::string::npos) << text;
    const std::string json = FormatJson(*report);
    EXPECT_NE(json.find("\"migratable\": true"), std::string::npos) << json;
    EXPECT_NE(json.find("\"fs_tag\": \"echo-tag\""), std::string::npos) << json;
  }
  serving.join();
}

}  // namespace
}  // namespace vhostmig::migration
