// Malformed requests sent on a raw socket get an error reply (or are
// dropped) and the back-end keeps serving the same connection.
#include <sys/eventfd.h>

#include <cstring>

#include "gtest/gtest.h"
#include "tests/vhost/backend/rig.h"
#include "vhost/protocol/codec.h"
#include "vhost/protocol/features.h"

namespace vhostmig::vhost::testing {
namespace {

class MalformedMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto rig = Rig::Create();
    ASSERT_TRUE(rig.ok()) << rig.status();
    rig_ = *std::move(rig);
    ASSERT_TRUE(rig_->Negotiate().ok());
  }

  // Sends `m` with NEED_REPLY and returns the REPLY_ACK value.
  uint64_t SendExpectingAck(Message m) {
    m.flags |= kFlagNeedReply;
    absl::StatusOr<Message> reply = rig_->Raw(std::move(m));
    EXPECT_TRUE(reply.ok()) << reply.status();
    if (!reply.ok() || reply->payload.size() != 8) return 0;
    EXPECT_TRUE(reply->is_reply());
    EXPECT_FALSE(reply->need_reply()) << "NEED_REPLY echoed in a reply";
    return *PayloadU64(*reply);
  }

  // The connection still works: a GET_FEATURES round trip succeeds.
  void ExpectStillServing() {
    absl::StatusOr<uint64_t> features = rig_->frontend().GetFeatures();
    ASSERT_TRUE(features.ok()) << features.status();
    EXPECT_TRUE(*features & kProtocolFeaturesMask);
  }

  std::unique_ptr<Rig> rig_;
};

TEST_F(MalformedMessageTest, ShortVringNumPayloadIsRejected) {
  Message m = MakeRequest(FrontendRequest::kSetVringNum, uint32_t{64});
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  EXPECT_GE(rig_->server().rejected(), 1u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, UnknownRequestIsRejected) {
  Message m = MakeMessage(99, kVersion1, uint64_t{0});
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, BadVersionIsRejected) {
  Message m = MakeMessage(ToWire(FrontendRequest::kSetOwner), 0x2);
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, ReplyFlagOnRequestIsRejected) {
  Message m =
      MakeMessage(ToWire(FrontendRequest::kSetOwner), kVersion1 | kFlagReply);
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, UnexpectedFdIsRejectedAndClosed) {
  Message m = MakeRequest(FrontendRequest::kSetFeatures, uint64_t{0});
  m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, MissingKickFdIsRejected) {
  Message m = MakeRequest(FrontendRequest::kSetVringKick, uint64_t{0});
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, MemoryTableWithNineRegionsIsRejected) {
  std::vector<VhostUserMemoryRegion> regions(9);
  for (size_t i = 0; i < regions.size(); ++i) {
    regions[i].guest_phys_addr = i << 20;
    regions[i].memory_size = 4096;
  }
  Message m = MakeRequest(FrontendRequest::kSetMemTable);
  m.payload = EncodeMemoryTable(regions);
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, MemoryTableSizeInconsistentWithCountIsRejected) {
  std::vector<VhostUserMemoryRegion> regions(1);
  regions[0].memory_size = 4096;
  Message m = MakeRequest(FrontendRequest::kSetMemTable);
  m.payload = EncodeMemoryTable(regions);
  m.payload[0] = 2;  // claims two regions, carries one
  m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, OversizedPayloadIsDroppedAndStreamStaysInStep) {
  Message m = MakeRequest(FrontendRequest::kSetFeatures);
  m.payload.assign(kMaxPayloadSize + 100, 0);
  // WriteMessage refuses to send it; write the bytes by hand.
  VhostUserHeader header{m.request, kVersion1,
                         static_cast<uint32_t>(m.payload.size())};
  std::vector<uint8_t> bytes(sizeof(header) + m.payload.size());
  std::memcpy(bytes.data(), &header, sizeof(header));
  ASSERT_EQ(::write(rig_->frontend().socket(), bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
  ExpectStillServing();
  EXPECT_GE(rig_->server().rejected(), 1u);
}

TEST_F(MalformedMessageTest, QueueIndexOutOfRangeIsRejected) {
  Message m =
      MakeRequest(FrontendRequest::kSetVringNum, VhostUserVringState{7, 64});
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, RingSizeNotPowerOfTwoIsRejected) {
  Message m =
      MakeRequest(FrontendRequest::kSetVringNum, VhostUserVringState{0, 100});
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, UnofferedFeatureIsRejected) {
  Message m = MakeRequest(FrontendRequest::kSetFeatures, uint64_t{1} << 63);
  EXPECT_NE(SendExpectingAck(std::move(m)), 0u);
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, GetVringBaseForBadQueueGetsAnErrorShapedReply) {
  Message m =
      MakeRequest(FrontendRequest::kGetVringBase, VhostUserVringState{9, 0});
  absl::StatusOr<Message> reply = rig_->Raw(std::move(m));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_TRUE(reply->payload.empty());
  ExpectStillServing();
}

TEST_F(MalformedMessageTest, BadDeviceStateDirectionReportsErrorWithoutFd) {
  Message m = MakeRequest(FrontendRequest::kSetDeviceStateFd,
                          VhostUserDeviceStateParams{7, 0});
  m.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
  absl::StatusOr<Message> reply = rig_->Raw(std::move(m));
  ASSERT_TRUE(reply.ok()) << reply.status();
  const uint64_t value = *PayloadU64(*reply);
  EXPECT_NE(value & kDeviceStateErrorMask, 0u);
  EXPECT_TRUE(reply->fds.empty());
  ExpectStillServing();
}

}  // namespace
}  // namespace vhostmig::vhost::testing
