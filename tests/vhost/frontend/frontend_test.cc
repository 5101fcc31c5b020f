// Frontend against a scripted fake back-end on a socketpair: the connect
// handshake, REPLY_ACK, and that every malformed reply is refused.
#include "vhost/frontend/frontend.h"

#include <sys/eventfd.h>
#include <sys/socket.h>

#include <functional>
#include <thread>

#include "gtest/gtest.h"
#include "vhost/protocol/codec.h"

namespace vhostmig::vhost {
namespace {

constexpr uint64_t kOffered = (uint64_t{1} << 32) | kProtocolFeaturesMask;

// Runs `script` on the back-end end of a socketpair after answering the
// connect handshake (GET_FEATURES, GET_PROTOCOL_FEATURES).
class FakeBackend {
 public:
  explicit FakeBackend(
      std::function<void(int)> script,
      uint64_t protocol = FeatureMask(ProtocolFeature::kReplyAck)) {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    front_.reset(sv[0]);
    back_.reset(sv[1]);
    thread_ = std::thread([this, script, protocol] {
      Expect(FrontendRequest::kGetFeatures);
      Reply(FrontendRequest::kGetFeatures, kOffered);
      Expect(FrontendRequest::kGetProtocolFeatures);
      Reply(FrontendRequest::kGetProtocolFeatures, protocol);
      script(back_.get());
    });
  }
  ~FakeBackend() {
    back_shutdown();
    thread_.join();
  }
  UniqueFd TakeFront() { return std::move(front_); }

  Message Expect(FrontendRequest r) {
    absl::StatusOr<Message> m = ReadMessage(back_.get());
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return Message();
    EXPECT_EQ(m->request, ToWire(r)) << m->name();
    return *std::move(m);
  }
  template <typename T>
  void Reply(FrontendRequest r, const T& body) {
    EXPECT_TRUE(WriteMessage(back_.get(), MakeReply(ToWire(r), body)).ok());
  }

 private:
  void back_shutdown() { ::shutdown(back_.get(), SHUT_RDWR); }
  UniqueFd front_, back_;
  std::thread thread_;
};

std::unique_ptr<Frontend> Connect(FakeBackend& fake) {
  auto f = Frontend::FromFd(fake.TakeFront());
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? *std::move(f) : nullptr;
}

TEST(FrontendTest, ConnectCachesFeaturesAndProtocolFeatures) {
  FakeBackend fake([](int) {});
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->backend_features(), kOffered);
  EXPECT_TRUE(f->BackendHas(ProtocolFeature::kReplyAck));
}

TEST(FrontendTest, ReplyAckErrorFailsTheRequest) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    fp->Expect(FrontendRequest::kSetProtocolFeatures);
    Message m = fp->Expect(FrontendRequest::kSetVringNum);
    EXPECT_TRUE(m.need_reply());
    fp->Reply(FrontendRequest::kSetVringNum, uint64_t{1});
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(
      f->SetProtocolFeatures(FeatureMask(ProtocolFeature::kReplyAck)).ok());
  absl::Status s = f->SetVringNum(0, 64);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("SET_VRING_NUM"), std::string::npos) << s;
}

TEST(FrontendTest, ReplyForAnotherRequestIsRefused) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    fp->Expect(FrontendRequest::kGetQueueNum);
    fp->Reply(FrontendRequest::kGetFeatures, uint64_t{2});
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(f->GetQueueNum().ok());
}

TEST(FrontendTest, ReplyWithWrongSizeIsRefused) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    fp->Expect(FrontendRequest::kGetVringBase);
    fp->Reply(FrontendRequest::kGetVringBase, uint32_t{5});
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<uint32_t> base = f->GetVringBase(0);
  EXPECT_FALSE(base.ok());
}

// The shapes real peers send (tests/interop/dirty_log_test.cc): empty, a
// u64 zero, a u64 that libvhost-user leaves holding the log size, and
// rust-vmm's echo of the VhostUserLog. None is an error.
TEST(FrontendTest, SetLogBaseAcceptsEveryPeersReplyShape) {
  FakeBackend* fp = nullptr;
  FakeBackend fake(
      [&](int back) {
        fp->Expect(FrontendRequest::kSetProtocolFeatures);
        Message m = fp->Expect(FrontendRequest::kSetLogBase);
        EXPECT_EQ(m.fds.size(), 1u);
        EXPECT_TRUE(WriteMessage(back, MakeReply(m.request)).ok());
        fp->Expect(FrontendRequest::kSetLogBase);
        fp->Reply(FrontendRequest::kSetLogBase, uint64_t{0});
        fp->Expect(FrontendRequest::kSetLogBase);
        fp->Reply(FrontendRequest::kSetLogBase, uint64_t{4096});
        fp->Expect(FrontendRequest::kSetLogBase);
        fp->Reply(FrontendRequest::kSetLogBase, VhostUserLog{4096, 0});
      },
      FeatureMask(ProtocolFeature::kLogShmfd));
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(
      f->SetProtocolFeatures(FeatureMask(ProtocolFeature::kLogShmfd)).ok());
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC));
  EXPECT_TRUE(f->SetLogBase(4096, 0, fd.get()).ok());
  EXPECT_TRUE(f->SetLogBase(4096, 0, fd.get()).ok());
  EXPECT_TRUE(f->SetLogBase(4096, 0, fd.get()).ok());
  EXPECT_TRUE(f->SetLogBase(4096, 0, fd.get()).ok());
}

TEST(FrontendTest, VringKickWithoutFdSendsNoFdFlag) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    Message m = fp->Expect(FrontendRequest::kSetVringKick);
    EXPECT_EQ(*PayloadU64(m), 3u | kVringNoFdFlag);
    EXPECT_TRUE(m.fds.empty());
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  EXPECT_TRUE(f->SetVringKick(3, -1).ok());
}

TEST(FrontendTest, DeviceStateFdUseYoursReturnsNoFd) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    Message m = fp->Expect(FrontendRequest::kSetDeviceStateFd);
    EXPECT_EQ(m.fds.size(), 1u);
    fp->Reply(FrontendRequest::kSetDeviceStateFd, kDeviceStateNoFdFlag);
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<UniqueFd> fd =
      f->SetDeviceStateFd(TransferDirection::kSave, MigrationPhase::kStopped,
                          UniqueFd(::eventfd(0, EFD_CLOEXEC)));
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_FALSE(fd->valid());
}

TEST(FrontendTest, DeviceStateFdBackendChannelIsReturned) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int back) {
    Message m = fp->Expect(FrontendRequest::kSetDeviceStateFd);
    Message reply = MakeReply(m.request, uint64_t{0});
    reply.fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    EXPECT_TRUE(WriteMessage(back, reply).ok());
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  absl::StatusOr<UniqueFd> fd =
      f->SetDeviceStateFd(TransferDirection::kLoad, MigrationPhase::kStopped,
                          UniqueFd(::eventfd(0, EFD_CLOEXEC)));
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_TRUE(fd->valid());
}

TEST(FrontendTest, DeviceStateFdErrorBitsFail) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    fp->Expect(FrontendRequest::kSetDeviceStateFd);
    fp->Reply(FrontendRequest::kSetDeviceStateFd, kDeviceStateNoFdFlag | 3);
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(f->SetDeviceStateFd(TransferDirection::kSave,
                                   MigrationPhase::kStopped,
                                   UniqueFd(::eventfd(0, EFD_CLOEXEC)))
                   .ok());
}

TEST(FrontendTest, DeviceStateFdPromisedButMissingFdFails) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    fp->Expect(FrontendRequest::kSetDeviceStateFd);
    fp->Reply(FrontendRequest::kSetDeviceStateFd, uint64_t{0});
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  EXPECT_FALSE(f->SetDeviceStateFd(TransferDirection::kSave,
                                   MigrationPhase::kStopped,
                                   UniqueFd(::eventfd(0, EFD_CLOEXEC)))
                   .ok());
}

TEST(FrontendTest, SetFeaturesReenablesRememberedRings) {
  FakeBackend* fp = nullptr;
  FakeBackend fake([&](int) {
    fp->Expect(FrontendRequest::kSetVringEnable);
    fp->Expect(FrontendRequest::kSetFeatures);
    Message m = fp->Expect(FrontendRequest::kSetVringEnable);
    const VhostUserVringState s = *PayloadAs<VhostUserVringState>(m);
    EXPECT_EQ(s.index, 1u);
    EXPECT_EQ(s.num, 1u);
  });
  fp = &fake;
  auto f = Connect(fake);
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->SetVringEnable(1, true).ok());
  ASSERT_TRUE(f->SetFeatures(kOffered | kLogAllMask).ok());
}

}  // namespace
}  // namespace vhostmig::vhost
