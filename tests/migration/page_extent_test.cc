// The page-extent format: zero pages cost a flag, extents coalesce only
// within a region and up to the data limit, every extent carries the digest
// of what it holds, and the destination rejects extents that were damaged
// on the way or whose flags contradict what it already received.
#include "migration/page_extent.h"

#include <sys/stat.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

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
  // What a well-behaved source sends: the extent with its digest.
  static PageExtent Sealed(PageExtent e) {
    e.crc32c = ExtentDigest(e);
    return e;
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
  const PageExtent first = Sealed({2, 1, 0, std::string(kPageSize, 'q')});
  const PageExtent resend = Sealed({2, 1, kDirtySinceLastRound | kZero, ""});
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
  ASSERT_TRUE(ApplyExtent(Sealed({16, 8, kZero, ""}), memory_, &received).ok());
  struct stat after;
  ASSERT_EQ(fstat(fd, &after), 0);
  EXPECT_EQ(after.st_blocks, before.st_blocks);
  char c = 1;
  ASSERT_TRUE(memory_.Read(20 * kPageSize, &c, 1).ok());
  EXPECT_EQ(c, 0);
  // The pages count as received: a resend is accepted, a first copy not.
  EXPECT_TRUE(ApplyExtent(Sealed({17, 1, kZero | kDirtySinceLastRound, ""}),
                          memory_, &received)
                  .ok());
  EXPECT_FALSE(
      ApplyExtent(Sealed({18, 1, kZero, ""}), memory_, &received).ok());
}

TEST_F(PageExtentTest, MalformedExtentsAreRejected) {
  // Intact (their digests match), but not what the format allows.
  std::vector<uint64_t> received;
  auto apply = [&](PageExtent e) {
    return ApplyExtent(Sealed(std::move(e)), memory_, &received);
  };
  EXPECT_TRUE(absl::IsInvalidArgument(
      apply({0, 1, 1u << 7, std::string(kPageSize, 'a')})))
      << "unknown flag";
  EXPECT_TRUE(
      absl::IsInvalidArgument(apply({0, 2, 0, std::string(kPageSize, 'a')})))
      << "short data";
  EXPECT_TRUE(absl::IsInvalidArgument(apply({0, 1, kZero, "x"})));
  EXPECT_TRUE(absl::IsInvalidArgument(apply({0, 0, kZero, ""})));
  EXPECT_FALSE(apply({9, 1, kZero, ""}).ok()) << "page 9 is in the hole";
}

TEST_F(PageExtentTest, BuiltExtentsCarryTheDigestOfWhatTheyHold) {
  Fill(2, 'a');
  Fill(3, 'b');
  Fill(17, 'c');
  ExtentBuilder b(&memory_, 0, 64);
  for (uint64_t p : {0, 1, 2, 3, 4, 5, 6, 7, 16, 17}) {
    ASSERT_TRUE(b.AddPage(p).ok());
  }
  std::vector<PageExtent> e = b.Take();
  ASSERT_EQ(e.size(), 5u);
  for (const PageExtent& x : e) {
    EXPECT_EQ(x.crc32c, ExtentDigest(x)) << "extent at page " << x.first_page;
  }
  // The header counts: zero extents differ by where they are.
  EXPECT_NE(e[0].crc32c, e[2].crc32c);
  // A destination takes them all.
  std::vector<uint64_t> received;
  for (const PageExtent& x : e) {
    EXPECT_TRUE(ApplyExtent(x, memory_, &received).ok());
  }
}

TEST_F(PageExtentTest, DamagedExtentIsRejectedNamingItBeforeAnythingLands) {
  std::vector<uint64_t> received;
  const PageExtent good = Sealed({2, 2, 0, std::string(2 * kPageSize, 'q')});

  // One flipped bit in the second page's data.
  PageExtent flipped = good;
  flipped.data[kPageSize + 100] ^= 0x20;
  const absl::Status s = ApplyExtent(flipped, memory_, &received);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_NE(s.message().find("page extent at page 2 (2 pages"),
            std::string::npos)
      << s;
  EXPECT_NE(s.message().find("damaged in transit"), std::string::npos) << s;
  // Nothing landed: memory is untouched and the pages are not marked
  // received, so the intact copy is still a valid first copy.
  char c = 1;
  ASSERT_TRUE(memory_.Read(3 * kPageSize + 100, &c, 1).ok());
  EXPECT_EQ(c, 0);
  ASSERT_TRUE(ApplyExtent(good, memory_, &received).ok());

  // A damaged header: a resend moved to another received page, or with a
  // flag flipped (it would zero the page instead of writing it).
  PageExtent moved =
      Sealed({2, 1, kDirtySinceLastRound, std::string(kPageSize, 'r')});
  moved.first_page = 3;
  EXPECT_TRUE(absl::IsDataLoss(ApplyExtent(moved, memory_, &received)));
  PageExtent zeroed = Sealed({2, 1, kDirtySinceLastRound | kZero, ""});
  zeroed.flags = kDirtySinceLastRound;
  EXPECT_TRUE(absl::IsDataLoss(ApplyExtent(zeroed, memory_, &received)));
  ASSERT_TRUE(memory_.Read(3 * kPageSize + 100, &c, 1).ok());
  EXPECT_EQ(c, 'q');

  // An extent without a digest (a source that computes none) is refused.
  PageExtent unsealed = good;
  unsealed.flags = kDirtySinceLastRound;
  unsealed.crc32c = 0;
  EXPECT_TRUE(absl::IsDataLoss(ApplyExtent(unsealed, memory_, &received)));
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
