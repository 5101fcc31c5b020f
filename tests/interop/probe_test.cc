// What each real peer offers, as our Frontend sees it on connect
// (GET_FEATURES / GET_PROTOCOL_FEATURES), and what the `vhostmig probe`
// binary concludes from it. Both peers can log dirty pages (VHOST_F_LOG_ALL
// + LOG_SHMFD, vhost-user.rst "Migration"); only virtiofsd 1.13 can hand
// over its internal state (DEVICE_STATE, protocol bit 19).
#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/interop/interop_fixture.h"
#include "vhost/frontend/frontend.h"
#include "vhost/protocol/features.h"

namespace vhostmig::interop {
namespace {

using vhost::FeatureMask;
using vhost::ProtocolFeature;

class ProbeTest : public PeerTest {};

TEST_P(ProbeTest, FrontendSeesLogAllLogShmfdAndDeviceStateOnlyWhereOffered) {
  ASSERT_OK_AND_ASSIGN(auto peer, StartPeer("probe"));
  ASSERT_OK_AND_ASSIGN(auto frontend,
                       vhost::Frontend::Connect(peer->socket_path()));
  const uint64_t features = frontend->backend_features();
  const uint64_t protocol = frontend->backend_protocol_features();
  RecordProperty("features", absl::StrCat("0x", absl::Hex(features)));
  RecordProperty("protocol_features", absl::StrCat("0x", absl::Hex(protocol)));
  EXPECT_TRUE(features & vhost::kLogAllMask)
      << absl::StrCat("0x", absl::Hex(features));
  EXPECT_TRUE(features & vhost::kProtocolFeaturesMask)
      << absl::StrCat("0x", absl::Hex(features));
  EXPECT_TRUE(features & FeatureMask(vhost::kFeatureVersion1))
      << absl::StrCat("0x", absl::Hex(features));
  EXPECT_TRUE(frontend->BackendHas(ProtocolFeature::kLogShmfd))
      << absl::StrCat("0x", absl::Hex(protocol));
  EXPECT_TRUE(frontend->BackendHas(ProtocolFeature::kReplyAck))
      << absl::StrCat("0x", absl::Hex(protocol));
  if (kind() == PeerKind::kVirtiofsd113) {
    EXPECT_TRUE(frontend->BackendHas(ProtocolFeature::kDeviceState))
        << absl::StrCat("0x", absl::Hex(protocol));
  } else {
    EXPECT_FALSE(frontend->BackendHas(ProtocolFeature::kDeviceState))
        << absl::StrCat("0x", absl::Hex(protocol));
  }
}

// Runs `command`, returning its exit status and stdout.
struct CommandResult {
  int status = -1;
  std::string out;
};
CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  r.status = pclose(p);
  return r;
}

// The binary is a data dependency; tests run in the workspace's runfiles
// directory, so its runfiles path is relative to the working directory.
constexpr char kVhostmig[] = "migration/cli/vhostmig";

TEST_P(ProbeTest, VhostmigProbeBinaryJudgesMigratability) {
  ASSERT_OK_AND_ASSIGN(auto peer, StartPeer("probe"));
  const CommandResult json = RunCommand(absl::StrCat(
      kVhostmig, " probe --json --socket=", peer->socket_path(), " 2>&1"));
  ASSERT_EQ(json.status, 0) << json.out;
  if (kind() == PeerKind::kVirtiofsd113) {
    EXPECT_TRUE(absl::StrContains(json.out, "\"migratable\": true"))
        << json.out;
    EXPECT_TRUE(absl::StrContains(json.out, "\"device_state\": true"))
        << json.out;
    EXPECT_TRUE(absl::StrContains(json.out, "\"reason\": \"yes:")) << json.out;
  } else {
    EXPECT_TRUE(absl::StrContains(json.out, "\"dirty_logging\": true"))
        << json.out;
    EXPECT_TRUE(absl::StrContains(json.out, "\"device_state\": false"))
        << json.out;
    EXPECT_FALSE(absl::StrContains(json.out, "\"reason\": \"yes:")) << json.out;
  }

  // The peers exit when a front-end disconnects; the text report needs a
  // fresh one.
  peer.reset();
  ASSERT_OK_AND_ASSIGN(peer, StartPeer("probe2"));
  const CommandResult text = RunCommand(absl::StrCat(
      kVhostmig, " probe --socket=", peer->socket_path(), " 2>&1"));
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "VHOST_F_LOG_ALL")) << text.out;
  EXPECT_TRUE(absl::StrContains(text.out, "LOG_SHMFD")) << text.out;
  if (kind() == PeerKind::kVirtiofsd113) {
    EXPECT_TRUE(absl::StrContains(text.out, "DEVICE_STATE")) << text.out;
    EXPECT_TRUE(absl::StrContains(text.out, "migratable:        yes"))
        << text.out;
  } else {
    // The reason line may mention DEVICE_STATE as what is missing; the
    // offered list must not.
    const size_t at = text.out.find("protocol features:");
    ASSERT_NE(at, std::string::npos) << text.out;
    const std::string line = text.out.substr(at, text.out.find('\n', at) - at);
    EXPECT_FALSE(absl::StrContains(line, "DEVICE_STATE")) << line;
    EXPECT_FALSE(absl::StrContains(text.out, "migratable:        yes"))
        << text.out;
  }
}

INSTANTIATE_TEST_SUITE_P(Peers, ProbeTest,
                         ::testing::Values(PeerKind::kCVirtiofsd,
                                           PeerKind::kVirtiofsd113),
                         PeerParamName);

}  // namespace
}  // namespace vhostmig::interop
