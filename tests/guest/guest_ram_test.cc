#include "guest/guest_ram.h"

#include <vector>

#include "gtest/gtest.h"

namespace vhostmig::guest {
namespace {

TEST(GuestRamTest, RegionsAreSeparatedByAHole) {
  GuestRamOptions options;
  options.region_sizes = {1 << 20, 1 << 20};
  options.base_gpa = 0x100000;
  options.hole_bytes = 0x100000;
  auto ram = GuestRam::Create(options);
  ASSERT_TRUE(ram.ok()) << ram.status();
  const auto& regions = (*ram)->memory().regions();
  ASSERT_EQ(regions.size(), 2u);
  EXPECT_EQ(regions[0]->gpa(), 0x100000u);
  EXPECT_EQ(regions[1]->gpa(), 0x300000u);
  EXPECT_FALSE((*ram)->memory().Translate(0x200000, 1).ok());
  EXPECT_EQ(regions[1]->layout().userspace_addr,
            0x300000u + options.frontend_offset);
  EXPECT_GE(regions[0]->fd(), 0);
}

TEST(GuestRamTest, AllocationsAreAlignedAndNeverSpanRegions) {
  GuestRamOptions options;
  options.region_sizes = {16384, 16384};
  options.hole_bytes = 0;  // adjacent regions: the allocator must split
  auto ram = *GuestRam::Create(options);
  auto a = ram->Allocate(100, 4096);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a % 4096, 0u);
  auto b = ram->Allocate(12000, 64);  // fits only in what is left of region 0
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(ram->memory().Translate(*b, 12000).ok());
  auto c = ram->Allocate(10000);  // no room in region 0: goes to region 1
  ASSERT_TRUE(c.ok());
  EXPECT_GE(*c, 16384u);
  EXPECT_TRUE(ram->memory().Translate(*c, 10000).ok());
  ram->Free(*a);
  ram->Free(*b);
  // The freed range of region 0 coalesces but not with region 1's tail.
  auto d = ram->Allocate(16384);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(*d, 0u);
  EXPECT_EQ(ram->Allocate(16384).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(GuestRamTest, FreeReturnsBytesAndIgnoresUnknownAddresses) {
  auto ram = *GuestRam::Create({});
  std::vector<uint64_t> bufs;
  for (int i = 0; i < 100; ++i) bufs.push_back(*ram->Allocate(1000 + i));
  EXPECT_GT(ram->allocated_bytes(), 100000u);
  for (uint64_t b : bufs) ram->Free(b);
  EXPECT_EQ(ram->allocated_bytes(), 0u);
  ram->Free(12345);
  EXPECT_EQ(ram->bad_frees(), 1u);
  // Everything coalesced back: the whole region is allocatable again.
  EXPECT_TRUE(ram->Allocate(64 << 20).ok());
}

TEST(GuestRamTest, RejectsUnalignedRegionSizes) {
  GuestRamOptions options;
  options.region_sizes = {1000};
  EXPECT_FALSE(GuestRam::Create(options).ok());
  EXPECT_FALSE(GuestRam::Create(GuestRamOptions{.region_sizes = {}}).ok());
}

}  // namespace
}  // namespace vhostmig::guest
