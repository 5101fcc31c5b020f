#include "tests/peers/peer_backend.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

namespace vhostmig::testing {
namespace {

class PeerBackendTest : public ::testing::TestWithParam<PeerKind> {
 protected:
  // Not under $TEST_TMPDIR: a socket path must fit in sun_path (108 bytes).
  void SetUp() override {
    char tmpl[] = "/tmp/peer_backend_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  std::string dir_;
};

TEST_P(PeerBackendTest, StartsServesSocketAndStopsOnDestruction) {
  auto peer = PeerBackend::Start(GetParam(), dir_, dir_ + "/peer.sock");
  if (absl::IsNotFound(peer.status())) GTEST_SKIP() << peer.status();
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(access((*peer)->socket_path().c_str(), F_OK), 0);
  const pid_t pid = (*peer)->pid();
  EXPECT_EQ(kill(pid, 0), 0);
  peer->reset();
  EXPECT_NE(kill(pid, 0), 0) << "peer " << pid << " outlived its PeerBackend";
}

TEST(PeerPathTest, MissingPeersDirIsNotFound) {
  const char* saved = std::getenv("VHOSTMIG_PEERS_DIR");
  const std::string restore = saved ? saved : "";
  setenv("VHOSTMIG_PEERS_DIR", "/nonexistent/peers", 1);
  EXPECT_TRUE(absl::IsNotFound(PeerPath(PeerKind::kCVirtiofsd).status()));
  if (saved) {
    setenv("VHOSTMIG_PEERS_DIR", restore.c_str(), 1);
  } else {
    unsetenv("VHOSTMIG_PEERS_DIR");
  }
}

INSTANTIATE_TEST_SUITE_P(BothPeers, PeerBackendTest,
                         ::testing::Values(PeerKind::kCVirtiofsd,
                                           PeerKind::kVirtiofsd113));

}  // namespace
}  // namespace vhostmig::testing
