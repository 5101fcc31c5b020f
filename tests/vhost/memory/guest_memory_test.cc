#include "vhost/memory/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace vhostmig::vhost {
namespace {

constexpr uint64_t kPage = 4096;

std::shared_ptr<MemoryRegion> MakeRegion(uint64_t gpa, uint64_t size,
                                         uint64_t uaddr, uint64_t offset = 0) {
  MemoryRegionLayout layout;
  layout.guest_phys_addr = gpa;
  layout.memory_size = size;
  layout.userspace_addr = uaddr;
  layout.mmap_offset = offset;
  auto region = MemoryRegion::CreateMemfd(layout);
  EXPECT_TRUE(region.ok()) << region.status();
  return region.ok() ? *region : nullptr;
}

// Two regions with a hole: [0x10000, 0x20000) and [0x30000, 0x38000).
GuestMemoryMap TwoRegionsWithHole() {
  auto map =
      GuestMemoryMap::Create({MakeRegion(0x30000, 0x8000, 0x7000030000),
                              MakeRegion(0x10000, 0x10000, 0x7000010000)});
  EXPECT_TRUE(map.ok()) << map.status();
  return *map;
}

TEST(MemoryRegionTest, MapRejectsZeroSize) {
  MemoryRegionLayout layout;
  layout.memory_size = 0;
  EXPECT_EQ(MemoryRegion::CreateMemfd(layout).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MemoryRegionTest, MapRejectsRangesOverflowing64Bits) {
  for (int which = 0; which < 3; ++which) {
    MemoryRegionLayout layout;
    layout.memory_size = 2 * kPage;
    const uint64_t near_top = UINT64_MAX - kPage;
    if (which == 0) layout.guest_phys_addr = near_top;
    if (which == 1) layout.userspace_addr = near_top;
    if (which == 2) layout.mmap_offset = near_top;
    UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
    ASSERT_TRUE(fd.valid());
    EXPECT_EQ(MemoryRegion::Map(std::move(fd), layout).status().code(),
              absl::StatusCode::kInvalidArgument)
        << "case " << which;
  }
}

// Found by backend_session_fuzz: a SET_MEM_TABLE region larger than its
// memfd mapped fine and the first ring access past the file's end raised
// SIGBUS in the back-end. The region is refused instead.
TEST(MemoryRegionTest, MapRejectsRegionsPastTheEndOfTheirFile) {
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(ftruncate(fd.get(), 4 * kPage), 0);
  MemoryRegionLayout layout;
  layout.memory_size = 4 * kPage;
  layout.mmap_offset = kPage;  // ends one page past the file
  EXPECT_EQ(MemoryRegion::Map(UniqueFd(dup(fd.get())), layout).status().code(),
            absl::StatusCode::kInvalidArgument);
  layout.memory_size = 3 * kPage;  // ends exactly at the file's end
  EXPECT_TRUE(MemoryRegion::Map(std::move(fd), layout).ok());
}

TEST(MemoryRegionTest, MapWithUnalignedOffsetPointsAtTheOffset) {
  // The fd holds a marker at byte 0x1234; a region at that offset must
  // start with it.
  UniqueFd fd(memfd_create("t", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(ftruncate(fd.get(), 4 * kPage), 0);
  const uint32_t marker = 0xfeedbeef;
  ASSERT_EQ(pwrite(fd.get(), &marker, sizeof(marker), 0x1234),
            static_cast<ssize_t>(sizeof(marker)));
  MemoryRegionLayout layout{0x100000, kPage, 0x5000, 0x1234};
  auto region = MemoryRegion::Map(std::move(fd), layout);
  ASSERT_TRUE(region.ok()) << region.status();
  uint32_t seen;
  std::memcpy(&seen, (*region)->host(), sizeof(seen));
  EXPECT_EQ(seen, marker);
}

TEST(GuestMemoryMapTest, TranslateAcceptsExactRegionEdges) {
  GuestMemoryMap map = TwoRegionsWithHole();
  auto first = map.Translate(0x10000, 0x10000);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, map.regions()[0]->host());
  auto last_byte = map.Translate(0x1ffff, 1);
  ASSERT_TRUE(last_byte.ok());
  EXPECT_EQ(*last_byte, map.regions()[0]->host() + 0xffff);
  EXPECT_TRUE(map.Translate(0x1ffff, 0).ok());
  EXPECT_TRUE(map.Translate(0x37fff, 1).ok());
}

TEST(GuestMemoryMapTest, TranslateRejectsOnePastTheEnd) {
  GuestMemoryMap map = TwoRegionsWithHole();
  EXPECT_FALSE(map.Translate(0x1ffff, 2).ok());
  EXPECT_FALSE(map.Translate(0x20000, 0).ok());
  EXPECT_FALSE(map.Translate(0x38000, 1).ok());
  EXPECT_FALSE(map.Translate(0xffff, 1).ok());
}

TEST(GuestMemoryMapTest, TranslateRejectsTheHoleBetweenRegions) {
  GuestMemoryMap map = TwoRegionsWithHole();
  EXPECT_FALSE(map.Translate(0x20000, 1).ok());
  EXPECT_FALSE(map.Translate(0x2ffff, 1).ok());
  // A range starting in region 0 and running into the hole.
  EXPECT_FALSE(map.Translate(0x1f000, 0x2000).ok());
  std::vector<iovec> iov;
  EXPECT_FALSE(map.TranslateToIovecs(0x1f000, 0x12000, &iov).ok());
  EXPECT_TRUE(iov.empty()) << "nothing appended on error";
}

TEST(GuestMemoryMapTest, TranslateRejectsLengthsOverflowing64Bits) {
  GuestMemoryMap map = TwoRegionsWithHole();
  EXPECT_FALSE(map.Translate(0x10000, UINT64_MAX).ok());
  EXPECT_FALSE(map.Translate(0x10010, UINT64_MAX - 0x8).ok());
  EXPECT_FALSE(map.Translate(UINT64_MAX, 1).ok());
  std::vector<iovec> iov;
  EXPECT_FALSE(map.TranslateToIovecs(0x10000, UINT64_MAX, &iov).ok());
  EXPECT_FALSE(map.TranslateToIovecs(UINT64_MAX - 1, 4, &iov).ok());
  uint8_t byte;
  EXPECT_FALSE(map.Read(UINT64_MAX, &byte, 2).ok());
}

TEST(GuestMemoryMapTest, RegionEndingAtTopOfAddressSpaceIsBoundsChecked) {
  const uint64_t gpa = UINT64_MAX - kPage;  // last byte is 2^64 - 2
  auto map = GuestMemoryMap::Create({MakeRegion(gpa, kPage, 0x1000)});
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_EQ(map->end_gpa(), UINT64_MAX);
  EXPECT_TRUE(map->Translate(UINT64_MAX - 1, 1).ok());
  EXPECT_FALSE(map->Translate(UINT64_MAX - 1, 2).ok());
  EXPECT_FALSE(map->Translate(UINT64_MAX, 1).ok());
  EXPECT_FALSE(map->Translate(gpa, UINT64_MAX).ok());
  std::vector<iovec> iov;
  EXPECT_FALSE(map->TranslateToIovecs(UINT64_MAX - 1, 2, &iov).ok());
  EXPECT_TRUE(map->TranslateToIovecs(gpa, kPage, &iov).ok());
}

TEST(GuestMemoryMapTest, IovecsSplitAtAdjacentRegionBoundary) {
  auto map = GuestMemoryMap::Create({MakeRegion(0, 2 * kPage, 0x100000),
                                     MakeRegion(2 * kPage, kPage, 0x900000)});
  ASSERT_TRUE(map.ok()) << map.status();
  std::vector<iovec> iov;
  ASSERT_TRUE(map->TranslateToIovecs(kPage + 100, 2 * kPage - 200, &iov).ok());
  ASSERT_EQ(iov.size(), 2u);
  EXPECT_EQ(iov[0].iov_base, map->regions()[0]->host() + kPage + 100);
  EXPECT_EQ(iov[0].iov_len, kPage - 100);
  EXPECT_EQ(iov[1].iov_base, map->regions()[1]->host());
  EXPECT_EQ(iov[1].iov_len, kPage - 100);
  // Translate (single region) refuses the same range.
  EXPECT_FALSE(map->Translate(kPage + 100, 2 * kPage - 200).ok());
}

TEST(GuestMemoryMapTest, ReadWriteSpanAdjacentRegions) {
  auto map = GuestMemoryMap::Create(
      {MakeRegion(0, kPage, 0x100000), MakeRegion(kPage, kPage, 0x900000)});
  ASSERT_TRUE(map.ok());
  std::vector<uint8_t> data(200);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i);
  ASSERT_TRUE(map->Write(kPage - 100, data.data(), data.size()).ok());
  EXPECT_EQ(map->regions()[0]->host()[kPage - 1], 99);
  EXPECT_EQ(map->regions()[1]->host()[0], 100);
  std::vector<uint8_t> back(200);
  ASSERT_TRUE(map->Read(kPage - 100, back.data(), back.size()).ok());
  EXPECT_EQ(back, data);
}

TEST(GuestMemoryMapTest, FailedWriteChangesNothing) {
  GuestMemoryMap map = TwoRegionsWithHole();
  std::vector<uint8_t> data(0x2000, 0xaa);
  EXPECT_FALSE(map.Write(0x1f000, data.data(), data.size()).ok());
  EXPECT_EQ(map.regions()[0]->host()[0xf000], 0) << "partial write happened";
}

TEST(GuestMemoryMapTest, CreateRejectsOverlapInEitherAddressSpace) {
  EXPECT_FALSE(GuestMemoryMap::Create({MakeRegion(0, 2 * kPage, 0x100000),
                                       MakeRegion(kPage, kPage, 0x900000)})
                   .ok());
  EXPECT_FALSE(GuestMemoryMap::Create({MakeRegion(0, kPage, 0x100000),
                                       MakeRegion(kPage, kPage, 0x100800)})
                   .ok());
}

TEST(GuestMemoryMapTest, FrontendToGuestUsesUserspaceAddresses) {
  GuestMemoryMap map = TwoRegionsWithHole();
  auto gpa = map.FrontendToGuest(0x7000030010, 0x100);
  ASSERT_TRUE(gpa.ok());
  EXPECT_EQ(*gpa, 0x30010u);
  EXPECT_FALSE(map.FrontendToGuest(0x7000037fff, 2).ok());
  EXPECT_FALSE(map.FrontendToGuest(0x30010, 1).ok()) << "a GPA is not a uaddr";
}

TEST(GuestMemoryMapTest, AddAndRemoveRegion) {
  GuestMemoryMap map = TwoRegionsWithHole();
  auto added = map.WithRegion(MakeRegion(0x20000, 0x10000, 0x7000020000));
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->regions().size(), 3u);
  EXPECT_TRUE(added->Translate(0x1f000, 0x2000).ok() == false)
      << "Translate stays single-region";
  std::vector<iovec> iov;
  EXPECT_TRUE(added->TranslateToIovecs(0x1f000, 0x12000, &iov).ok())
      << "the hole is filled";
  EXPECT_EQ(added->end_gpa(), 0x38000u);
  // The original snapshot is unchanged.
  EXPECT_FALSE(map.Translate(0x20000, 1).ok());

  EXPECT_FALSE(map.WithRegion(MakeRegion(0x18000, 0x10000, 0x1)).ok());

  MemoryRegionLayout remove{0x30000, 0x8000, 0x7000030000, 0};
  auto removed = added->WithoutRegion(remove);
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(removed->regions().size(), 2u);
  EXPECT_FALSE(removed->Translate(0x30000, 1).ok());
  EXPECT_EQ(removed->WithoutRegion(remove).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(GuestMemoryMapTest, SnapshotKeepsRemovedRegionMapped) {
  GuestMemoryMap map = TwoRegionsWithHole();
  auto ptr = map.Translate(0x30000, 8);
  ASSERT_TRUE(ptr.ok());
  GuestMemoryMap old = map;
  map = *map.WithoutRegion(MemoryRegionLayout{0x30000, 0x8000, 0x7000030000});
  std::memset(*ptr, 0x5a, 8);  // still mapped through `old`
  uint8_t b = 0;
  ASSERT_TRUE(old.Read(0x30007, &b, 1).ok());
  EXPECT_EQ(b, 0x5a);
}

}  // namespace
}  // namespace vhostmig::vhost
