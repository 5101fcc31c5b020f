// The page-extent format: zero pages cost a flag, extents coalesce only
// within a region and up to the data limit, and the destination rejects
// extents whose flags contradict what it already received.
#include "migration/page_extent.h"

#include <sys/stat.h>

#include <cstring>

#include "gtest/gtest.h"
#include "migration/in_process_transport.h"

namespace vhostmig::migration {
namespace {

class PageExtentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two regions of 8 pages with a hole of 8 pages between them.
    std::vector<std::shared_ptr<vhost::MemoryRegion>> regions;
    for (uint64_t gpa : {uint64_t{0}, uint64_t{16 * kPageSize}}) {
      auto r = vhost::MemoryRegion::CreateMemfd(
          {gpa, 8 * kPageSize, gpa + 0x7f0000000000, 0});
      ASSERT_TRUE(r.ok()) << r.status();
      regions.push_back(*r);
    }
    auto m = vhost::GuestMemoryMap::Create(regions);
    ASSERT_TRUE(m.ok()) << m.status();
    memory_ = *m;
  }
  void Fill(uint64_t page, char c) {
    ASSERT_TRUE(memory_
                    .Write(page * kPageSize, std::string(kPageSize, c).data(),
                           kPageSize)
                    .ok());
  }
  vhost::GuestMemoryMap memory_;
};

TEST_F(PageExtentTest, ZeroPagesCostAFlagAndDataPagesCoalesce) {
  Fill(2, 'a');
  Fill(3, 'b');
  ExtentBuilder b(&memory_, 0, 64);
  for (uint64_t p = 0; p < 8; ++p) ASSERT_TRUE(b.AddPage(p).ok());
  std::vector<PageExtent> e = b.Take();
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0].first_page, 0u);
  EXPECT_EQ(e[0].page_count, 2u);
  EXPECT_EQ(e[0].flags, kZero);
  EXPECT_TRUE(e[0].data.empty());
  EXPECT_EQ(e[1].page_count, 2u);
  EXPECT_EQ(e[1].flags, 0u);
  EXPECT_EQ(e[1].data.size(), 2 * kPageSize);
  EXPECT_EQ(e[2].page_count, 4u);
  EXPECT_EQ(e[2].flags, kZero);
}

TEST_F(PageExtentTest, ExtentsNeverSpanTheHoleOrExceedTheDataLimit) {
  for (uint64_t p : {6, 7, 16, 17, 18}) Fill(p, 'x');
  ExtentBuilder b(&memory_, kDirtySinceLastRound, 2);
  for (uint64_t p : {6, 7, 16, 17, 18}) ASSERT_TRUE(b.AddPage(p).ok());
  std::vector<PageExtent> e = b.Take();
  ASSERT_EQ(e.size(), 3u);  // {6,7} | {16,17} | {18}
  EXPECT_EQ(e[0].page_count, 2u);
  EXPECT_EQ(e[1].first_page, 16u);
  EXPECT_EQ(e[2].first_page, 18u);
  for (const auto& x : e) EXPECT_EQ(x.flags, kDirtySinceLastRound);
  EXPECT_FALSE(b.AddPage(10).ok()) << "a page in the hole is not backed";
}

TEST_F(PageExtentTest, DestinationChecksFirstCopyAndResendClaims) {
  std::vector<uint64_t> received;
  PageExtent first{2, 1, 0, std::string(kPageSize, 'q')};
  PageExtent resend{2, 1, kDirtySinceLastRound | kZero, ""};
  EXPECT_FALSE(ApplyExtent(resend, memory_, &received).ok())
      << "a resend of a page never sent must be rejected";
  ASSERT_TRUE(ApplyExtent(first, memory_, &received).ok());
  char c = 0;
  ASSERT_TRUE(memory_.Read(2 * kPageSize + 7, &c, 1).ok());
  EXPECT_EQ(c, 'q');
  EXPECT_FALSE(ApplyExtent(first, memory_, &received).ok())
      << "a second first copy must be rejected";
  ASSERT_TRUE(ApplyExtent(resend, memory_, &received).ok());
  ASSERT_TRUE(memory_.Read(2 * kPageSize + 7, &c, 1).ok());
  EXPECT_EQ(c, 0) << "kZero must clear the page";
}

TEST_F(PageExtentTest, FirstCopyOfZeroPagesAllocatesNothing) {
  // Incoming memory is fresh (zero-filled): a first copy of zero pages
  // must not touch it, or a mostly empty guest costs the destination an
  // allocation per page the source never paid for.
  std::vector<uint64_t> received;
  const int fd = memory_.regions()[1]->fd();
  struct stat before;
  ASSERT_EQ(fstat(fd, &before), 0);
  ASSERT_TRUE(ApplyExtent({16, 8, kZero, ""}, memory_, &received).ok());
  struct stat after;
  ASSERT_EQ(fstat(fd, &after), 0);
  EXPECT_EQ(after.st_blocks, before.st_blocks);
  char c = 1;
  ASSERT_TRUE(memory_.Read(20 * kPageSize, &c, 1).ok());
  EXPECT_EQ(c, 0);
  // The pages count as received: a resend is accepted, a first copy not.
  EXPECT_TRUE(
      ApplyExtent({17, 1, kZero | kDirtySinceLastRound, ""}, memory_, &received)
          .ok());
  EXPECT_FALSE(ApplyExtent({18, 1, kZero, ""}, memory_, &received).ok());
}

TEST_F(PageExtentTest, MalformedExtentsAreRejected) {
  std::vector<uint64_t> received;
  EXPECT_FALSE(ApplyExtent({0, 1, 1u << 7, std::string(kPageSize, 'a')},
                           memory_, &received)
                   .ok());  // unknown flag
  EXPECT_FALSE(ApplyExtent({0, 2, 0, std::string(kPageSize, 'a')}, memory_,
                           &received)
                   .ok());  // short data
  EXPECT_FALSE(ApplyExtent({0, 1, kZero, "x"}, memory_, &received).ok());
  EXPECT_FALSE(ApplyExtent({0, 0, kZero, ""}, memory_, &received).ok());
  EXPECT_FALSE(ApplyExtent({9, 1, kZero, ""}, memory_, &received).ok())
      << "page 9 is in the hole";
}

TEST(InProcessTransportTest, FlowControlBlocksTheSenderUntilTheWindowDrains) {
  auto [a, b] = InProcessTransport::CreatePair(/*window_bytes=*/10000);
  PageBatch big{1, {PageExtent{0, 2, 0, std::string(2 * kPageSize, 'x')}}};
  ASSERT_TRUE(a->Send(big, absl::Seconds(1)).ok());  // alone: always fits
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      a->Send(big, absl::Milliseconds(20))));  // window full
  ASSERT_TRUE(b->Receive(absl::Seconds(1)).ok());
  ASSERT_TRUE(a->Send(big, absl::Seconds(1)).ok());
  a->Close();
  // What was sent before the close still arrives; then Unavailable.
  ASSERT_TRUE(b->Receive(absl::Seconds(1)).ok());
  EXPECT_TRUE(absl::IsUnavailable(b->Receive(absl::Seconds(1)).status()));
  EXPECT_TRUE(absl::IsUnavailable(b->Send(Ready{}, absl::Seconds(1))));
  EXPECT_EQ(a->sent().pages, 4u);
}

}  // namespace
}  // namespace vhostmig::migration
