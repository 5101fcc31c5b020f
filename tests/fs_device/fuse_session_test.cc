// Session requests and the device's virtio face: INIT negotiation, DESTROY,
// SYNCFS, config space, features and queues.
#include <linux/virtio_fs.h>

#include "tests/fs_device/fs_test_fixture.h"
#include "vhost/protocol/features.h"

namespace vhostmig::fs {
namespace {

using SessionTest = FsDeviceTest;

TEST_F(SessionTest, InitNegotiatesOnlyFlagsBothSidesHave) {
  auto init = driver().Init(FUSE_ASYNC_READ | FUSE_POSIX_LOCKS |
                            FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES);
  ASSERT_TRUE(init.ok()) << init.status();
  EXPECT_EQ(init->major, 7u);
  EXPECT_TRUE(init->flags & FUSE_ASYNC_READ);
  EXPECT_TRUE(init->flags & FUSE_DO_READDIRPLUS);
  EXPECT_FALSE(init->flags & FUSE_POSIX_LOCKS);
  EXPECT_EQ(init->max_pages, 256u);
  EXPECT_EQ(init->max_write, 1u << 20);
  const FuseSession s = fs().session();
  EXPECT_TRUE(s.initialized);
  EXPECT_EQ(s.flags, init->flags);
}

TEST_F(SessionTest, InitWithANewerMajorAnswersOurVersionOnly) {
  fuse_init_in in{};
  in.major = 8;
  auto r = driver().Send(FUSE_INIT, 0, StructBytes(in));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->error, 0);
  fuse_init_out out{};
  ASSERT_GE(r->payload.size(), 8u);
  std::memcpy(&out, r->payload.data(),
              std::min(r->payload.size(), sizeof(out)));
  EXPECT_EQ(out.major, 7u);
}

TEST_F(SessionTest, DestroyForgetsAllStateUntilTheNextInit) {
  WriteHostFile("f", "");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  ASSERT_TRUE(driver().Open(f, O_RDONLY).ok());
  ASSERT_TRUE(driver().Destroy().ok());
  EXPECT_EQ(fs().inodes().size(), 1u);
  EXPECT_EQ(fs().handles().size(), 0u);
  EXPECT_EQ(guest::FuseErrno(driver().Lookup(FUSE_ROOT_ID, "f").status()), EIO);
  ASSERT_TRUE(driver().Init().ok());
  EXPECT_NE(MustLookup(FUSE_ROOT_ID, "f"), f);
}

TEST_F(SessionTest, SyncfsSucceeds) {
  EXPECT_TRUE(driver().Syncfs(FUSE_ROOT_ID).ok());
}

TEST_F(SessionTest, DeviceResetDropsTheSession) {
  MustLookup(FUSE_ROOT_ID, ".");
  device().Reset();
  EXPECT_FALSE(fs().session().initialized);
  EXPECT_EQ(fs().inodes().size(), 1u);
}

TEST_F(SessionTest, ConfigSpaceHoldsTagAndQueueCount) {
  auto config = device().ReadConfig(0, sizeof(virtio_fs_config));
  ASSERT_TRUE(config.ok()) << config.status();
  virtio_fs_config c{};
  std::memcpy(&c, config->data(), sizeof(c));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(c.tag)), "vhostmig");
  EXPECT_EQ(le32toh(c.num_request_queues), 1u);
  EXPECT_FALSE(device().ReadConfig(30, 20).ok());
  EXPECT_FALSE(device().WriteConfig(0, *config).ok());
}

TEST_F(SessionTest, DeviceOffersVersion1RingFeaturesConfigAndDeviceState) {
  const uint64_t f = device().Features();
  EXPECT_TRUE(f & vhost::FeatureMask(vhost::kFeatureVersion1));
  EXPECT_TRUE(f & vhost::FeatureMask(vhost::kFeatureEventIdx));
  EXPECT_TRUE(f & vhost::FeatureMask(vhost::kFeatureIndirectDesc));
  EXPECT_EQ(device().ProtocolFeatures(),
            vhost::FeatureMask(vhost::ProtocolFeature::kConfig) |
                vhost::FeatureMask(vhost::ProtocolFeature::kDeviceState));
  EXPECT_EQ(device().NumQueues(), 2u);
}

TEST(VirtioFsDeviceTest, RejectsAnOverlongTagAndZeroQueues) {
  TempDir dir;
  FsConfig config;
  config.shared_dir = dir.path();
  VirtioFsOptions options;
  options.tag = std::string(37, 't');
  EXPECT_FALSE(VirtioFsDevice::Create(config, options).ok());
  options.tag = "ok";
  options.num_request_queues = 0;
  EXPECT_FALSE(VirtioFsDevice::Create(config, options).ok());
}

TEST(VirtioFsDeviceTest, RejectsAMissingSharedDirectory) {
  FsConfig config;
  config.shared_dir = "/nonexistent/share";
  EXPECT_FALSE(VirtioFsDevice::Create(config, VirtioFsOptions{}).ok());
}

class MultiQueueTest : public FsDeviceTest {
 protected:
  VirtioFsOptions Options() override {
    VirtioFsOptions o;
    o.num_request_queues = 3;
    return o;
  }
  guest::LoopbackFsOptions LoopbackOptions() override {
    auto o = FsDeviceTest::LoopbackOptions();
    o.driver.num_request_queues = 3;
    return o;
  }
};

TEST_F(MultiQueueTest, EveryRequestQueueServesRequests) {
  WriteHostFile("f", "");
  EXPECT_EQ(device().NumQueues(), 4u);
  for (uint32_t q = 1; q <= 3; ++q) {
    auto r = driver().Send(FUSE_LOOKUP, FUSE_ROOT_ID, Name("f"), 4096, q);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->error, 0) << "queue " << q;
  }
}

}  // namespace
}  // namespace vhostmig::fs
