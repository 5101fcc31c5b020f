// Codec round trips over a socketpair, with fds, and framing errors.
#include "vhost/protocol/codec.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "gtest/gtest.h"

namespace vhostmig::vhost {
namespace {

struct SocketPair {
  SocketPair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
  UniqueFd a, b;
};

ino_t Inode(int fd) {
  struct stat st;
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

TEST(CodecTest, RoundTripsHeaderPayloadAndFds) {
  SocketPair sp;
  int p1[2], p2[2];
  ASSERT_EQ(::pipe(p1), 0);
  ASSERT_EQ(::pipe(p2), 0);
  UniqueFd keep[] = {UniqueFd(p1[0]), UniqueFd(p1[1]), UniqueFd(p2[0]),
                     UniqueFd(p2[1])};
  Message m = MakeRequest(FrontendRequest::kSetVringKick, uint64_t{3});
  m.flags |= kFlagNeedReply;
  m.fds.emplace_back(::dup(p1[0]));
  m.fds.emplace_back(::dup(p2[1]));
  ASSERT_TRUE(WriteMessage(sp.a.get(), m).ok());
  absl::StatusOr<Message> got = ReadMessage(sp.b.get());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->request, m.request);
  EXPECT_EQ(got->flags, m.flags);
  EXPECT_EQ(got->payload, m.payload);
  ASSERT_EQ(got->fds.size(), 2u);
  EXPECT_EQ(Inode(got->fds[0].get()), Inode(p1[0]));
  EXPECT_EQ(Inode(got->fds[1].get()), Inode(p2[1]));
  EXPECT_EQ(::fcntl(got->fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST(CodecTest, RoundTripsEmptyPayload) {
  SocketPair sp;
  ASSERT_TRUE(
      WriteMessage(sp.a.get(), MakeRequest(FrontendRequest::kSetOwner)).ok());
  absl::StatusOr<Message> got = ReadMessage(sp.b.get());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->request, ToWire(FrontendRequest::kSetOwner));
  EXPECT_TRUE(got->payload.empty());
  EXPECT_TRUE(got->fds.empty());
}

TEST(CodecTest, ReadsMessageDeliveredInSmallPieces) {
  SocketPair sp;
  Message m = MakeRequest(FrontendRequest::kSetVringAddr, VhostUserVringAddr{});
  m.payload[8] = 0x42;
  std::vector<uint8_t> bytes(sizeof(VhostUserHeader) + m.payload.size());
  VhostUserHeader h{m.request, m.flags,
                    static_cast<uint32_t>(m.payload.size())};
  std::memcpy(bytes.data(), &h, sizeof(h));
  std::memcpy(bytes.data() + sizeof(h), m.payload.data(), m.payload.size());
  std::thread writer([&] {
    for (uint8_t byte : bytes) ASSERT_EQ(::write(sp.a.get(), &byte, 1), 1);
  });
  absl::StatusOr<Message> got = ReadMessage(sp.b.get());
  writer.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload, m.payload);
}

TEST(CodecTest, LargePayloadSurvivesPartialWrites) {
  SocketPair sp;
  int size = 4096;
  ASSERT_EQ(
      ::setsockopt(sp.a.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
  std::vector<uint8_t> payload(kMaxPayloadSize);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = i * 7;
  absl::StatusOr<Message> got;
  std::thread reader([&] { got = ReadMessage(sp.b.get()); });
  ASSERT_TRUE(WriteMessage(sp.a.get(), 24, kVersion1, payload).ok());
  reader.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload, payload);
}

TEST(CodecTest, CleanCloseIsReportedAsConnectionClosed) {
  SocketPair sp;
  sp.a.reset();
  absl::StatusOr<Message> got = ReadMessage(sp.b.get());
  EXPECT_TRUE(IsConnectionClosed(got.status())) << got.status();
}

TEST(CodecTest, CloseMidMessageIsDataLoss) {
  SocketPair sp;
  VhostUserHeader h{1, kVersion1, 8};
  ASSERT_EQ(::write(sp.a.get(), &h, sizeof(h)), (ssize_t)sizeof(h));
  sp.a.reset();
  absl::StatusOr<Message> got = ReadMessage(sp.b.get());
  EXPECT_TRUE(absl::IsDataLoss(got.status())) << got.status();
  EXPECT_FALSE(IsConnectionClosed(got.status()));
}

TEST(CodecTest, OversizedPayloadIsDrainedAndNextMessageReads) {
  SocketPair sp;
  const uint32_t big = kMaxPayloadSize + 1;
  std::vector<uint8_t> bytes(sizeof(VhostUserHeader) + big, 0);
  VhostUserHeader h{2, kVersion1, big};
  std::memcpy(bytes.data(), &h, sizeof(h));
  std::thread writer([&] {
    ASSERT_EQ(::write(sp.a.get(), bytes.data(), bytes.size()),
              (ssize_t)bytes.size());
    ASSERT_TRUE(
        WriteMessage(sp.a.get(), MakeRequest(FrontendRequest::kSetOwner)).ok());
  });
  absl::StatusOr<Message> first = ReadMessage(sp.b.get());
  EXPECT_TRUE(absl::IsInvalidArgument(first.status())) << first.status();
  EXPECT_NE(first.status().message().find("exceeds the limit"),
            std::string::npos);
  absl::StatusOr<Message> second = ReadMessage(sp.b.get());
  writer.join();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->request, ToWire(FrontendRequest::kSetOwner));
}

TEST(CodecTest, HugePayloadSizeIsDataLoss) {
  SocketPair sp;
  VhostUserHeader h{2, kVersion1, 0x80000000u};
  ASSERT_EQ(::write(sp.a.get(), &h, sizeof(h)), (ssize_t)sizeof(h));
  absl::StatusOr<Message> got = ReadMessage(sp.b.get());
  EXPECT_TRUE(absl::IsDataLoss(got.status())) << got.status();
}

TEST(CodecTest, MoreThanEightFdsAreRejectedAndClosed) {
  SocketPair sp;
  std::vector<UniqueFd> owned;
  std::vector<int> fds;
  for (int i = 0; i < 9; ++i) {
    owned.emplace_back(::dup(0));
    fds.push_back(owned.back().get());
  }
  EXPECT_FALSE(WriteMessage(sp.a.get(), 5, kVersion1, {}, fds).ok());
  // Send them by hand to see the reader's side.
  VhostUserHeader h{5, kVersion1, 0};
  iovec iov{&h, sizeof(h)};
  alignas(cmsghdr) char control[CMSG_SPACE(9 * sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(9 * sizeof(int));
  std::memcpy(CMSG_DATA(c), fds.data(), 9 * sizeof(int));
  ASSERT_EQ(::sendmsg(sp.a.get(), &msg, 0), (ssize_t)sizeof(h));
  absl::StatusOr<Message> got = ReadMessage(sp.b.get());
  EXPECT_TRUE(absl::IsInvalidArgument(got.status())) << got.status();
}

TEST(CodecTest, WriteRejectsOversizedPayload) {
  SocketPair sp;
  std::vector<uint8_t> payload(kMaxPayloadSize + 1);
  EXPECT_FALSE(WriteMessage(sp.a.get(), 5, kVersion1, payload).ok());
}

}  // namespace
}  // namespace vhostmig::vhost
