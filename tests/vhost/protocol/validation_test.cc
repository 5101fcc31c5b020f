// Per-request validation: every rejection rule, with its message.
#include "vhost/protocol/validation.h"

#include <sys/eventfd.h>

#include "gtest/gtest.h"
#include "vhost/protocol/features.h"

namespace vhostmig::vhost {
namespace {

UniqueFd AnFd() { return UniqueFd(::eventfd(0, EFD_CLOEXEC)); }

std::string Error(const Message& m) {
  absl::Status s = ValidateRequest(m);
  EXPECT_FALSE(s.ok()) << m.name() << " was accepted";
  return std::string(s.message());
}

TEST(ValidationTest, WellFormedRequestsPass) {
  EXPECT_TRUE(ValidateRequest(MakeRequest(FrontendRequest::kGetFeatures)).ok());
  EXPECT_TRUE(ValidateRequest(MakeRequest(FrontendRequest::kSetVringNum,
                                          VhostUserVringState{0, 256}))
                  .ok());
  Message kick = MakeRequest(FrontendRequest::kSetVringKick, uint64_t{1});
  kick.fds.push_back(AnFd());
  EXPECT_TRUE(ValidateRequest(kick).ok());
  Message nofd =
      MakeRequest(FrontendRequest::kSetVringCall, uint64_t{1} | kVringNoFdFlag);
  EXPECT_TRUE(ValidateRequest(nofd).ok());
  Message state = MakeRequest(FrontendRequest::kSetDeviceStateFd,
                              VhostUserDeviceStateParams{0, 0});
  state.fds.push_back(AnFd());
  EXPECT_TRUE(ValidateRequest(state).ok());
}

TEST(ValidationTest, WrongPayloadSizeNamesRequestAndSizes) {
  EXPECT_EQ(Error(MakeRequest(FrontendRequest::kSetVringNum, uint32_t{4})),
            "SET_VRING_NUM: payload is 4 bytes, expected 8");
  EXPECT_EQ(Error(MakeRequest(FrontendRequest::kGetFeatures, uint64_t{0})),
            "GET_FEATURES: payload is 8 bytes, expected none");
}

TEST(ValidationTest, UnknownRequestIsRejected) {
  EXPECT_EQ(Error(MakeMessage(0, kVersion1)), "unknown request 0");
  EXPECT_EQ(Error(MakeMessage(44, kVersion1)), "unknown request 44");
}

TEST(ValidationTest, BadVersionAndFlagsAreRejected) {
  EXPECT_EQ(Error(MakeMessage(3, 0)),
            "SET_OWNER: header version is 0, expected 1");
  EXPECT_EQ(Error(MakeMessage(3, kVersion1 | 0x10)),
            "SET_OWNER: reserved header flags 0x10 are set");
  EXPECT_EQ(Error(MakeMessage(3, kVersion1 | kFlagReply)),
            "SET_OWNER: REPLY flag set on a request");
}

TEST(ValidationTest, FdCountsAreEnforced) {
  Message extra = MakeRequest(FrontendRequest::kSetFeatures, uint64_t{0});
  extra.fds.push_back(AnFd());
  EXPECT_EQ(Error(extra),
            "SET_FEATURES: 1 file descriptors attached, expected 0");
  Message missing = MakeRequest(FrontendRequest::kSetVringKick, uint64_t{0});
  EXPECT_EQ(Error(missing),
            "SET_VRING_KICK: 0 file descriptors attached, expected 1");
  Message nofd_with_fd =
      MakeRequest(FrontendRequest::kSetVringKick, kVringNoFdFlag);
  nofd_with_fd.fds.push_back(AnFd());
  EXPECT_EQ(Error(nofd_with_fd),
            "SET_VRING_KICK: 1 file descriptors attached, expected 0");
  Message log = MakeRequest(FrontendRequest::kSetLogBase, VhostUserLog{});
  EXPECT_EQ(Error(log),
            "SET_LOG_BASE: 0 file descriptors attached, expected 1");
  Message rem =
      MakeRequest(FrontendRequest::kRemMemReg, VhostUserSingleMemoryRegion{});
  rem.fds.push_back(AnFd());
  EXPECT_TRUE(ValidateRequest(rem).ok()) << "a stray fd is tolerated";
  rem.fds.push_back(AnFd());
  EXPECT_EQ(Error(rem),
            "REM_MEM_REG: 2 file descriptors attached, expected 0 or 1");
}

TEST(ValidationTest, MemoryTableChecks) {
  std::vector<VhostUserMemoryRegion> regions(2);
  regions[0] = {0, 4096, 0x1000, 0};
  regions[1] = {0x100000, 4096, 0x200000, 0};
  Message ok = MakeRequest(FrontendRequest::kSetMemTable);
  ok.payload = EncodeMemoryTable(regions);
  ok.fds.push_back(AnFd());
  ok.fds.push_back(AnFd());
  EXPECT_TRUE(ValidateRequest(ok).ok());

  Message too_few_fds = MakeRequest(FrontendRequest::kSetMemTable);
  too_few_fds.payload = EncodeMemoryTable(regions);
  too_few_fds.fds.push_back(AnFd());
  EXPECT_EQ(Error(too_few_fds),
            "SET_MEM_TABLE: 1 file descriptors attached, expected 2");

  std::vector<VhostUserMemoryRegion> nine(9, regions[0]);
  Message too_many = MakeRequest(FrontendRequest::kSetMemTable);
  too_many.payload = EncodeMemoryTable(nine);
  EXPECT_EQ(Error(too_many), "SET_MEM_TABLE: 9 regions, at most 8 allowed");

  Message inconsistent = MakeRequest(FrontendRequest::kSetMemTable);
  inconsistent.payload = EncodeMemoryTable(regions);
  inconsistent.payload.resize(inconsistent.payload.size() - 8);
  EXPECT_EQ(Error(inconsistent),
            "SET_MEM_TABLE: payload is 64 bytes, expected 72 for 2 regions");

  Message short_header = MakeRequest(FrontendRequest::kSetMemTable);
  short_header.payload.assign(4, 0);
  EXPECT_EQ(Error(short_header),
            "SET_MEM_TABLE: payload is 4 bytes, expected at least 8");

  std::vector<VhostUserMemoryRegion> empty_region = {{0, 0, 0, 0}};
  Message zero = MakeRequest(FrontendRequest::kSetMemTable);
  zero.payload = EncodeMemoryTable(empty_region);
  zero.fds.push_back(AnFd());
  EXPECT_EQ(Error(zero),
            "SET_MEM_TABLE: region at guest address 0x0 has size 0");

  std::vector<VhostUserMemoryRegion> wrap = {{~uint64_t{0} - 10, 4096, 0, 0}};
  Message wraps = MakeRequest(FrontendRequest::kSetMemTable);
  wraps.payload = EncodeMemoryTable(wrap);
  wraps.fds.push_back(AnFd());
  EXPECT_NE(Error(wraps).find("wraps around"), std::string::npos);
}

TEST(ValidationTest, ConfigChecks) {
  ConfigAccess access;
  access.data.assign(36, 0);
  Message ok = MakeRequest(FrontendRequest::kGetConfig);
  ok.payload = *EncodeConfig(access);
  EXPECT_TRUE(ValidateRequest(ok).ok());

  Message inconsistent = MakeRequest(FrontendRequest::kGetConfig);
  inconsistent.payload = ok.payload;
  inconsistent.payload.pop_back();
  EXPECT_EQ(Error(inconsistent),
            "GET_CONFIG: payload is 47 bytes, expected 48 for a config access "
            "of 36 bytes");

  VhostUserConfigHeader big{0, 300, 0};
  Message too_big = MakeRequest(FrontendRequest::kSetConfig, big);
  EXPECT_EQ(Error(too_big),
            "SET_CONFIG: config size is 300, at most 256 allowed");
  access.data.assign(257, 0);
  EXPECT_FALSE(EncodeConfig(access).ok());
}

TEST(ValidationTest, ReplyChecks) {
  const uint32_t get = ToWire(FrontendRequest::kGetFeatures);
  EXPECT_TRUE(ValidateReply(get, MakeReply(get, uint64_t{1}), false).ok());
  EXPECT_EQ(ValidateReply(get, MakeReply(15, uint64_t{1}), false).message(),
            "GET_FEATURES: reply is for GET_PROTOCOL_FEATURES");
  EXPECT_EQ(ValidateReply(get, MakeMessage(get, kVersion1, uint64_t{1}), false)
                .message(),
            "GET_FEATURES: reply lacks the REPLY flag");
  EXPECT_EQ(
      ValidateReply(get,
                    MakeMessage(get, kVersion1 | kFlagReply | kFlagNeedReply,
                                uint64_t{1}),
                    false)
          .message(),
      "GET_FEATURES: reply has the NEED_REPLY flag");
  EXPECT_EQ(ValidateReply(get, MakeReply(get, uint32_t{1}), false).message(),
            "GET_FEATURES: payload is 4 bytes, expected 8");
  const uint32_t log = ToWire(FrontendRequest::kSetLogBase);
  EXPECT_TRUE(ValidateReply(log, MakeReply(log), false).ok());
  EXPECT_TRUE(ValidateReply(log, MakeReply(log, uint64_t{0}), false).ok());
  // What the real peers send: libvhost-user a u64 holding the log size,
  // rust-vmm's vhost the echoed VhostUserLog.
  EXPECT_TRUE(ValidateReply(log, MakeReply(log, uint64_t{1024}), false).ok());
  EXPECT_TRUE(
      ValidateReply(log, MakeReply(log, VhostUserLog{1024, 0}), false).ok());
  const uint32_t num = ToWire(FrontendRequest::kSetVringNum);
  EXPECT_TRUE(ValidateReply(num, MakeReply(num, uint64_t{0}), true).ok());
  Message with_fd = MakeReply(num, uint64_t{0});
  with_fd.fds.push_back(AnFd());
  EXPECT_FALSE(ValidateReply(num, with_fd, true).ok());
}

TEST(RequestNamesTest, EveryRequestHasAName) {
  for (uint32_t r = kFirstFrontendRequest; r <= kLastFrontendRequest; ++r) {
    EXPECT_EQ(RequestName(r).find("UNKNOWN"), std::string::npos) << r;
  }
  for (uint32_t r = kFirstBackendRequest; r <= kLastBackendRequest; ++r) {
    EXPECT_EQ(BackendRequestName(r).find("UNKNOWN"), std::string::npos) << r;
  }
  EXPECT_EQ(RequestName(FrontendRequest::kSetDeviceStateFd),
            "SET_DEVICE_STATE_FD");
  EXPECT_EQ(RequestName(43), "CHECK_DEVICE_STATE");
  EXPECT_EQ(RequestName(44), "UNKNOWN_REQUEST(44)");
}

TEST(FeatureNamesTest, NamesKnownBits) {
  EXPECT_EQ(FeatureBitName(26), "VHOST_F_LOG_ALL");
  EXPECT_EQ(FeatureBitName(30), "VHOST_USER_F_PROTOCOL_FEATURES");
  EXPECT_EQ(FeatureBitName(32), "VIRTIO_F_VERSION_1");
  EXPECT_EQ(FeatureBitName(29), "VIRTIO_RING_F_EVENT_IDX");
  for (int bit = 0; bit <= kLastProtocolFeature; ++bit) {
    EXPECT_EQ(ProtocolFeatureName(bit).find("bit "), std::string::npos) << bit;
  }
  EXPECT_EQ(ProtocolFeatureName(19), "DEVICE_STATE");
  EXPECT_EQ(ProtocolFeatureName(15), "CONFIGURE_MEM_SLOTS");
  EXPECT_EQ(ProtocolFeatureNames(0x3),
            (std::vector<std::string>{"MQ", "LOG_SHMFD"}));
}

}  // namespace
}  // namespace vhostmig::vhost
