#include "vhost/memory/dirty_log.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace vhostmig::vhost {
namespace {

std::shared_ptr<DirtyLog> MakeLog(uint64_t guest_end) {
  auto log = DirtyLog::Create(guest_end);
  EXPECT_TRUE(log.ok()) << log.status();
  return *log;
}

std::vector<uint64_t> HarvestAll(DirtyLog& log) {
  std::vector<uint64_t> pages;
  log.Harvest([&](uint64_t p) { pages.push_back(p); });
  return pages;
}

// A log mapped from a memfd at `offset` with `size` bytes, plus the fd
// (duplicated) so the test can look at the bytes the way a peer would.
struct MappedLog {
  std::shared_ptr<DirtyLog> log;
  UniqueFd peer;
};
MappedLog MapLog(uint64_t size, uint64_t offset) {
  UniqueFd fd(memfd_create("log", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(ftruncate(fd.get(), static_cast<off_t>(offset + size + 4096)), 0);
  UniqueFd peer(dup(fd.get()));
  auto log = DirtyLog::Map(std::move(fd), size, offset);
  EXPECT_TRUE(log.ok()) << log.status();
  return {*log, std::move(peer)};
}

TEST(DirtyLogTest, CreateSizesForGuestEndInWholeWords) {
  EXPECT_EQ(MakeLog(0)->size_bytes(), 8u);
  EXPECT_EQ(MakeLog(64 * kDirtyPageSize)->size_bytes(), 8u);
  EXPECT_EQ(MakeLog(64 * kDirtyPageSize + 1)->size_bytes(), 16u);
  EXPECT_EQ(MakeLog(1ull << 30)->page_count(), (1ull << 30) / kDirtyPageSize);
}

TEST(DirtyLogTest, MapRejectsZeroSizeAndOverflow) {
  UniqueFd fd(memfd_create("log", MFD_CLOEXEC));
  EXPECT_FALSE(DirtyLog::Map(UniqueFd(dup(fd.get())), 0, 0).ok());
  EXPECT_FALSE(DirtyLog::Map(UniqueFd(dup(fd.get())), 16, UINT64_MAX - 8).ok());
}

// Like memory regions (guest_memory_test): a log larger than its fd would
// SIGBUS at the first dirty page, so it is refused.
TEST(DirtyLogTest, MapRejectsALogPastTheEndOfItsFile) {
  UniqueFd fd(memfd_create("log", MFD_CLOEXEC));
  ASSERT_EQ(ftruncate(fd.get(), 4096), 0);
  EXPECT_EQ(DirtyLog::Map(UniqueFd(dup(fd.get())), 8192, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DirtyLog::Map(UniqueFd(dup(fd.get())), 4096, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(DirtyLog::Map(std::move(fd), 4096, 0).ok());
}

TEST(DirtyLogTest, MarkRangeSetsEveryOverlappingPage) {
  auto log = MakeLog(1 << 20);
  log->MarkRange(kDirtyPageSize - 1, 2);  // straddles pages 0 and 1
  log->MarkRange(10 * kDirtyPageSize, kDirtyPageSize);  // exactly page 10
  EXPECT_EQ(HarvestAll(*log), (std::vector<uint64_t>{0, 1, 10}));
}

TEST(DirtyLogTest, MarkRangeOfZeroBytesMarksNothing) {
  auto log = MakeLog(1 << 20);
  log->MarkRange(5 * kDirtyPageSize, 0);
  EXPECT_EQ(log->CountDirty(), 0u);
}

TEST(DirtyLogTest, MarkRangeAcrossManyWordsSetsExactlyThosePages) {
  auto log = MakeLog(1 << 24);
  log->MarkRange(60 * kDirtyPageSize + 5, 200 * kDirtyPageSize);
  std::vector<uint64_t> expected;
  for (uint64_t p = 60; p <= 260; ++p) expected.push_back(p);
  EXPECT_EQ(log->CountDirty(), expected.size());
  EXPECT_EQ(HarvestAll(*log), expected);
}

TEST(DirtyLogTest, MarksBeyondTheLogAreDroppedAndCounted) {
  auto log = MakeLog(64 * kDirtyPageSize);                  // 64 pages
  log->MarkRange(62 * kDirtyPageSize, 4 * kDirtyPageSize);  // pages 62..65
  EXPECT_EQ(HarvestAll(*log), (std::vector<uint64_t>{62, 63}));
  EXPECT_EQ(log->dropped_marks(), 2u);
  log->MarkRange(1000 * kDirtyPageSize, 1);
  EXPECT_EQ(log->dropped_marks(), 3u);
}

TEST(DirtyLogTest, MarkRangeNearTopOfAddressSpaceDoesNotWrap) {
  auto log = MakeLog(64 * kDirtyPageSize);
  log->MarkRange(UINT64_MAX - 10, 100);  // would wrap to page 0
  EXPECT_EQ(log->CountDirty(), 0u);
  EXPECT_GT(log->dropped_marks(), 0u);
}

TEST(DirtyLogTest, HarvestClearsTheLog) {
  auto log = MakeLog(1 << 20);
  log->MarkRange(0, 3 * kDirtyPageSize);
  EXPECT_EQ(log->Harvest([](uint64_t) {}), 3u);
  EXPECT_EQ(log->CountDirty(), 0u);
  EXPECT_EQ(log->Harvest([](uint64_t) {}), 0u);
  EXPECT_FALSE(log->IsPageDirty(0));
}

TEST(DirtyLogTest, HarvestIntoOrsIntoTheCallersBitmap) {
  auto log = MakeLog(128 * kDirtyPageSize);
  std::vector<uint64_t> bitmap = {1ull << 3};  // shorter than needed
  log->MarkRange(5 * kDirtyPageSize, 1);
  log->MarkRange(70 * kDirtyPageSize, 1);
  EXPECT_EQ(log->HarvestInto(&bitmap), 2u);
  ASSERT_EQ(bitmap.size(), 2u);
  EXPECT_EQ(bitmap[0], (1ull << 3) | (1ull << 5));
  EXPECT_EQ(bitmap[1], 1ull << 6);
  EXPECT_EQ(log->CountDirty(), 0u);
}

TEST(DirtyLogTest, BitLayoutIsBitNModEightOfByteNDivEight) {
  MappedLog m = MapLog(16, 0);
  m.log->MarkRange(11 * kDirtyPageSize, 1);  // byte 1, bit 3
  uint8_t bytes[16];
  ASSERT_EQ(pread(m.peer.get(), bytes, sizeof(bytes), 0), 16);
  EXPECT_EQ(bytes[1], 1 << 3);
  EXPECT_EQ(bytes[0], 0);
}

TEST(DirtyLogTest, MisalignedLogFallsBackToBytesAndStaysCorrect) {
  // SET_LOG_BASE with an offset that is not a multiple of 8.
  MappedLog m = MapLog(21, 4096 + 3);
  for (uint64_t p : {0, 7, 8, 63, 64, 100, 167}) {
    m.log->MarkRange(p * kDirtyPageSize, 1);
  }
  m.log->MarkRange(168 * kDirtyPageSize, 1);  // one past the end
  EXPECT_EQ(m.log->dropped_marks(), 1u);
  uint8_t bytes[21];
  ASSERT_EQ(pread(m.peer.get(), bytes, sizeof(bytes), 4096 + 3), 21);
  EXPECT_EQ(bytes[0], 0x81);
  EXPECT_EQ(bytes[1], 0x01);
  EXPECT_EQ(bytes[20], 0x80);
  EXPECT_EQ(HarvestAll(*m.log),
            (std::vector<uint64_t>{0, 7, 8, 63, 64, 100, 167}));
  EXPECT_EQ(m.log->CountDirty(), 0u);
}

TEST(DirtyLogTest, TrailingPartialWordIsMarkedAndHarvested) {
  MappedLog m = MapLog(13, 0);  // one word + 5 bytes
  m.log->MarkRange(60 * kDirtyPageSize, 10 * kDirtyPageSize);  // 60..69
  m.log->MarkRange(103 * kDirtyPageSize, 1);
  std::vector<uint64_t> expected = {60, 61, 62, 63, 64, 65,
                                    66, 67, 68, 69, 103};
  EXPECT_EQ(HarvestAll(*m.log), expected);
}

// Markers each set a disjoint, interleaved set of pages exactly once (so
// they contend on the same words) while a harvester fetch-and-clears in a
// loop. Every page must be harvested exactly once.
TEST(DirtyLogTest, ConcurrentMarkersAndHarvesterLoseNothing) {
  constexpr int kMarkers = 4;
  constexpr uint64_t kPages = 1 << 16;
  auto log = MakeLog(kPages * kDirtyPageSize);
  std::vector<std::atomic<int>> seen(kPages);
  std::atomic<int> markers_done{0};
  std::thread harvester([&] {
    while (markers_done.load() < kMarkers) {
      log->Harvest([&](uint64_t p) { seen[p].fetch_add(1); });
    }
  });
  std::vector<std::thread> markers;
  for (int t = 0; t < kMarkers; ++t) {
    markers.emplace_back([&, t] {
      for (uint64_t p = t; p < kPages; p += kMarkers) {
        log->MarkRange(p * kDirtyPageSize, 1);
      }
      markers_done.fetch_add(1);
    });
  }
  for (auto& t : markers) t.join();
  harvester.join();
  log->Harvest([&](uint64_t p) { seen[p].fetch_add(1); });
  uint64_t total = 0;
  for (uint64_t p = 0; p < kPages; ++p) {
    ASSERT_EQ(seen[p].load(), 1) << "page " << p;
    ++total;
  }
  EXPECT_EQ(total, kPages);
}

// A writer swaps in a new log (SET_LOG_BASE during memory hotplug) while
// markers run: every mark lands in the old or the new log, none is lost.
TEST(DirtyLogTest, ReplacingTheLogWhileMarkingLosesNothing) {
  constexpr uint64_t kPages = 1 << 15;
  std::shared_ptr<DirtyLog> first = MakeLog(kPages * kDirtyPageSize);
  std::shared_ptr<DirtyLog> second = MakeLog(kPages * kDirtyPageSize);
  std::shared_ptr<DirtyLog> current = first;
  std::atomic<bool> started{false};
  std::thread marker([&] {
    for (uint64_t p = 0; p < kPages; ++p) {
      if (p == 16) started.store(true);
      std::atomic_load(&current)->MarkRange(p * kDirtyPageSize, 1);
    }
  });
  while (!started.load()) {
  }
  std::atomic_store(&current, second);
  marker.join();
  std::vector<int> seen(kPages, 0);
  first->Harvest([&](uint64_t p) { ++seen[p]; });
  second->Harvest([&](uint64_t p) { ++seen[p]; });
  for (uint64_t p = 0; p < kPages; ++p) ASSERT_EQ(seen[p], 1) << "page " << p;
}

}  // namespace
}  // namespace vhostmig::vhost
