// DeviceQueue and DriverQueue against each other and against hand-written
// (hostile) rings.
#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_ring.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/virtqueue/device_queue.h"
#include "vhost/virtqueue/driver_queue.h"

namespace vhostmig::vhost {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kPage = 4096;
// Region A [0x10000, 0x110000) and B [0x110000, 0x120000) are adjacent; a
// hole follows; region C is [0x200000, 0x210000).
constexpr uint64_t kRingGpa = 0x10000;
constexpr uint64_t kBufGpa = 0x40000;  // scratch buffers, page granular
constexpr uint64_t kAEnd = 0x110000;
constexpr uint64_t kHoleGpa = 0x150000;

std::shared_ptr<MemoryRegion> Region(uint64_t gpa, uint64_t size) {
  auto r = MemoryRegion::CreateMemfd({gpa, size, gpa + 0x7f0000000000ull, 0});
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

GuestMemoryMap TestMemory() {
  auto map = GuestMemoryMap::Create({Region(0x10000, 0x100000),
                                     Region(0x110000, 0x10000),
                                     Region(0x200000, 0x10000)});
  EXPECT_TRUE(map.ok()) << map.status();
  return *map;
}

struct Features {
  bool event_idx;
  bool indirect;
};

class VirtqueueTest : public ::testing::TestWithParam<Features> {
 protected:
  void SetUp() override { Init(16, GetParam().event_idx); }

  void Init(uint16_t size, bool event_idx) {
    memory_ = TestMemory();
    ASSERT_TRUE(driver_.Init(memory_, kRingGpa, size, event_idx).ok());
    VringLayout layout = driver_.layout();
    layout.indirect_desc = true;
    layout.log_used_gpa = layout.used_gpa;  // SET_VRING_ADDR with LOG flag
    ASSERT_TRUE(device_.Setup(memory_, layout).ok());
  }

  std::optional<uint64_t> Indirect(int slot = 0) const {
    if (!GetParam().indirect) return std::nullopt;
    return kBufGpa + 0x80000 + slot * kPage;
  }

  void WriteString(uint64_t gpa, const std::string& s) {
    ASSERT_TRUE(memory_.Write(gpa, s.data(), s.size()).ok());
  }
  std::string ReadString(uint64_t gpa, size_t len) {
    std::string s(len, '\0');
    EXPECT_TRUE(memory_.Read(gpa, s.data(), len).ok());
    return s;
  }

  GuestMemoryMap memory_;
  DriverQueue driver_;
  DeviceQueue device_;
};

INSTANTIATE_TEST_SUITE_P(
    RingFeatures, VirtqueueTest,
    ::testing::Values(Features{false, false}, Features{true, false},
                      Features{false, true}, Features{true, true}),
    [](const auto& info) {
      return std::string(info.param.event_idx ? "EventIdx" : "NoEventIdx") +
             (info.param.indirect ? "Indirect" : "Direct");
    });

TEST_P(VirtqueueTest, RoundTripCarriesBuffersAndWrittenLengthAcrossWraps) {
  // 3 * size round trips wrap both the ring slots and the free list.
  for (int i = 0; i < 48; ++i) {
    const std::string request = "request " + std::to_string(i);
    WriteString(kBufGpa, request);
    auto head = driver_.Add({{kBufGpa, static_cast<uint32_t>(request.size())}},
                            {{kBufGpa + kPage, 64}, {kBufGpa + 2 * kPage, 64}},
                            Indirect());
    ASSERT_TRUE(head.ok()) << head.status();

    auto chain = device_.Pop();
    ASSERT_TRUE(chain.has_value());
    ASSERT_TRUE(chain->status.ok()) << chain->status;
    EXPECT_EQ(chain->head, *head);
    EXPECT_EQ(chain->readable_len, request.size());
    EXPECT_EQ(chain->writable_len, 128u);
    ASSERT_EQ(chain->writable.size(), 2u);
    std::string got(request.size(), '\0');
    EXPECT_EQ(chain->CopyFromReadable(0, got.data(), got.size()), got.size());
    EXPECT_EQ(got, request);
    const std::string reply(100, static_cast<char>('a' + i % 26));
    // 100 bytes: all of the first writable buffer and 36 of the second.
    EXPECT_EQ(chain->CopyToWritable(0, reply.data(), reply.size()), 100u);
    device_.PushUsed(*chain, 100);
    EXPECT_FALSE(device_.Pop().has_value());

    auto used = driver_.PollUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->head, *head);
    EXPECT_EQ(used->len, 100u);
    EXPECT_EQ(ReadString(kBufGpa + kPage, 64), reply.substr(0, 64));
    EXPECT_EQ(ReadString(kBufGpa + 2 * kPage, 36), reply.substr(64));
    EXPECT_FALSE(driver_.PollUsed().has_value());
    EXPECT_EQ(driver_.free_count(), 16);
  }
  EXPECT_EQ(device_.next_avail(), 48);
  EXPECT_EQ(device_.next_used(), 48);
}

TEST_P(VirtqueueTest, ManyChainsInFlightCompleteOutOfOrder) {
  std::vector<uint16_t> heads;
  for (int i = 0; i < 8; ++i) {
    auto head = driver_.Add({{kBufGpa + i * 64, 16}},
                            {{kBufGpa + kPage + i * 64, 16}}, Indirect(i));
    ASSERT_TRUE(head.ok()) << head.status();
    heads.push_back(*head);
  }
  std::vector<DescriptorChain> chains;
  while (auto chain = device_.Pop()) chains.push_back(*chain);
  ASSERT_EQ(chains.size(), 8u);
  // Complete in reverse, in one batch.
  std::vector<std::pair<const DescriptorChain*, uint32_t>> done;
  for (int i = 7; i >= 0; --i) done.push_back({&chains[i], uint32_t(i)});
  device_.PushUsedBatch(done);
  for (int i = 7; i >= 0; --i) {
    auto used = driver_.PollUsed();
    ASSERT_TRUE(used.has_value());
    EXPECT_EQ(used->head, heads[i]);
    EXPECT_EQ(used->len, uint32_t(i));
  }
  EXPECT_EQ(driver_.free_count(), 16);
}

TEST_P(VirtqueueTest, WrittenLengthIsClampedToTheWritableBytes) {
  ASSERT_TRUE(
      driver_.Add({{kBufGpa, 8}}, {{kBufGpa + kPage, 32}}, Indirect()).ok());
  auto chain = device_.Pop();
  ASSERT_TRUE(chain.has_value() && chain->status.ok());
  device_.PushUsed(*chain, 1 << 20);
  auto used = driver_.PollUsed();
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(used->len, 32u);
}

TEST_P(VirtqueueTest, BufferSpanningAdjacentRegionsBecomesTwoEntries) {
  WriteString(kAEnd - 4, "abcdefgh");
  ASSERT_TRUE(driver_.Add({{kAEnd - 4, 8}}, {}, Indirect()).ok());
  auto chain = device_.Pop();
  ASSERT_TRUE(chain.has_value());
  ASSERT_TRUE(chain->status.ok()) << chain->status;
  ASSERT_EQ(chain->readable.size(), 2u);
  EXPECT_EQ(chain->readable[0].gpa, kAEnd - 4);
  EXPECT_EQ(chain->readable[0].len, 4u);
  EXPECT_EQ(chain->readable[1].gpa, kAEnd);
  EXPECT_EQ(chain->readable[1].len, 4u);
  std::string got(8, '\0');
  chain->CopyFromReadable(0, got.data(), 8);
  EXPECT_EQ(got, "abcdefgh");
  EXPECT_EQ(chain->ReadableIovecs().size(), 2u);
  device_.PushUsed(*chain, 0);
}

TEST_P(VirtqueueTest, DriverReportsFullRing) {
  const int per_chain = GetParam().indirect ? 1 : 2;
  int added = 0;
  while (true) {
    auto head =
        driver_.Add({{kBufGpa, 8}}, {{kBufGpa + kPage, 8}}, Indirect(added));
    if (!head.ok()) {
      EXPECT_EQ(head.status().code(), absl::StatusCode::kResourceExhausted);
      break;
    }
    ++added;
    ASSERT_LE(added, 16);
  }
  EXPECT_EQ(added, 16 / per_chain);
}

TEST_P(VirtqueueTest, DriverSkipsUsedElementsForHeadsNotInFlight) {
  DescriptorChain fake;
  fake.head = 9;  // never added
  device_.PushUsed(fake, 0);
  EXPECT_FALSE(driver_.PollUsed().has_value());
  EXPECT_EQ(driver_.bad_used_count(), 1u);
  EXPECT_EQ(driver_.free_count(), 16);
}

TEST_P(VirtqueueTest, DriverStateRestoresInFlightChains) {
  auto a = driver_.Add({{kBufGpa, 8}}, {{kBufGpa + kPage, 8}}, Indirect(0));
  auto b = driver_.Add({{kBufGpa, 8}}, {{kBufGpa + kPage, 8}}, Indirect(1));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(driver_.PollUsed() == std::nullopt);
  DriverQueue::State state = driver_.SaveState();
  EXPECT_EQ(state.next_avail, 2);
  EXPECT_EQ(state.in_flight_heads.size(), 2u);

  DriverQueue restored;
  ASSERT_TRUE(
      restored.RestoreState(memory_, kRingGpa, 16, GetParam().event_idx, state)
          .ok());
  EXPECT_EQ(restored.free_count(), driver_.free_count());
  while (auto chain = device_.Pop()) device_.PushUsed(*chain, 1);
  std::set<uint16_t> seen;
  while (auto used = restored.PollUsed()) seen.insert(used->head);
  EXPECT_EQ(seen, (std::set<uint16_t>{*a, *b}));
  EXPECT_EQ(restored.free_count(), 16);
  // And it keeps working.
  ASSERT_TRUE(restored.Add({{kBufGpa, 8}}, {}, Indirect()).ok());
  auto chain = device_.Pop();
  ASSERT_TRUE(chain.has_value() && chain->status.ok());
}

// ---- Dirty logging ----

TEST_P(VirtqueueTest, UsedRingAndWrittenPagesAreLoggedAndNothingElse) {
  auto log = *DirtyLog::Create(0x300000);
  device_.SetLog(log);
  // Readable on one page, writable over pages W..W+2 of which 1.5 pages
  // are written.
  const uint64_t w = kBufGpa + 4 * kPage;
  ASSERT_TRUE(
      driver_.Add({{kBufGpa, 100}}, {{w, uint32_t(3 * kPage)}}, Indirect())
          .ok());
  EXPECT_EQ(log->CountDirty(), 0u)
      << "the driver's writes are not the device's";
  auto chain = device_.Pop();
  ASSERT_TRUE(chain.has_value() && chain->status.ok());
  device_.PushUsed(*chain, kPage + kPage / 2);
  std::vector<uint64_t> pages;
  log->Harvest([&](uint64_t p) { pages.push_back(p); });
  const uint64_t used_page = driver_.layout().used_gpa / kPage;
  EXPECT_EQ(pages,
            (std::vector<uint64_t>{used_page, w / kPage, w / kPage + 1}));
}

TEST_P(VirtqueueTest, UsedRingIsLoggedOnlyWithTheLogFlagAndAtLogGuestAddr) {
  auto log = *DirtyLog::Create(0x300000);
  device_.SetLog(log);
  auto round_trip = [&](uint64_t buf) {
    ASSERT_TRUE(driver_.Add({}, {{buf, 8}}, Indirect()).ok());
    auto chain = device_.Pop();
    ASSERT_TRUE(chain.has_value() && chain->status.ok());
    device_.PushUsed(*chain, 8);
    ASSERT_TRUE(driver_.PollUsed().has_value());
  };
  // Without VHOST_VRING_F_LOG only the written buffer is logged.
  VringLayout layout = driver_.layout();
  layout.indirect_desc = true;
  layout.log_used_gpa.reset();
  device_.set_next_avail(device_.next_avail());
  ASSERT_TRUE(device_.Setup(memory_, layout).ok());
  round_trip(kBufGpa);
  std::vector<uint64_t> pages;
  log->Harvest([&](uint64_t p) { pages.push_back(p); });
  EXPECT_EQ(pages, (std::vector<uint64_t>{kBufGpa / kPage}));
  // With it, used-ring writes are logged at log_guest_addr, which the
  // front-end chose (here deliberately not the ring's own address).
  const uint64_t log_addr = 0x200000;
  layout.log_used_gpa = log_addr;
  ASSERT_TRUE(device_.Setup(memory_, layout).ok());
  round_trip(kBufGpa);
  pages.clear();
  log->Harvest([&](uint64_t p) { pages.push_back(p); });
  EXPECT_EQ(pages, (std::vector<uint64_t>{kBufGpa / kPage, log_addr / kPage}));
}

TEST_P(VirtqueueTest, ABatchThatWrapsLogsExactlyTheUsedSlotsItWrote) {
  // A 2048-entry used ring spans 5 pages at log_guest_addr. A batch of 8
  // completions starting at slot 2044 writes slots 2044..2047 (pages 3-4)
  // and 0..3 (page 0) plus the index (page 0): pages 1 and 2 are untouched
  // and must stay clean.
  constexpr uint16_t kSize = 2048;
  const uint64_t log_addr = 0x200000;
  driver_ = DriverQueue();
  ASSERT_TRUE(
      driver_.Init(memory_, kRingGpa, kSize, GetParam().event_idx).ok());
  VringLayout layout = driver_.layout();
  layout.indirect_desc = true;
  layout.log_used_gpa = log_addr;
  device_ = DeviceQueue();
  ASSERT_TRUE(device_.Setup(memory_, layout).ok());
  for (int i = 0; i < kSize - 4; ++i) {
    ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect()).ok());
    auto chain = device_.Pop();
    ASSERT_TRUE(chain.has_value() && chain->status.ok());
    device_.PushUsed(*chain, 0);
    ASSERT_TRUE(driver_.PollUsed().has_value());
  }
  auto log = *DirtyLog::Create(0x300000);
  device_.SetLog(log);
  std::vector<DescriptorChain> chains;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect()).ok());
    auto chain = device_.Pop();
    ASSERT_TRUE(chain.has_value() && chain->status.ok());
    chains.push_back(std::move(*chain));
  }
  std::vector<std::pair<const DescriptorChain*, uint32_t>> done;
  for (const DescriptorChain& c : chains) done.push_back({&c, 0});
  device_.PushUsedBatch(done);
  std::set<uint64_t> pages;
  log->Harvest([&](uint64_t p) { pages.insert(p); });
  const uint64_t first = log_addr / kPage;
  // avail_event (EVENT_IDX) sits right after slot 2047: page 4 as well.
  EXPECT_EQ(pages, (std::set<uint64_t>{first, first + 3, first + 4}));
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(driver_.PollUsed().has_value());
}

TEST_P(VirtqueueTest, EachLogReceivesOnlyTheWritesMadeWhileAttached) {
  auto first = *DirtyLog::Create(0x300000);
  auto second = *DirtyLog::Create(0x300000);
  auto round_trip = [&] {
    ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect()).ok());
    auto chain = device_.Pop();
    ASSERT_TRUE(chain.has_value() && chain->status.ok());
    device_.PushUsed(*chain, 8);
    ASSERT_TRUE(driver_.PollUsed().has_value());
  };
  device_.SetLog(first);
  round_trip();
  EXPECT_TRUE(first->IsPageDirty(kBufGpa / kPage));
  first->Harvest([](uint64_t) {});
  device_.SetLog(second);
  round_trip();
  EXPECT_EQ(first->CountDirty(), 0u);
  EXPECT_TRUE(second->IsPageDirty(kBufGpa / kPage));
  second->Harvest([](uint64_t) {});
  device_.SetLog(nullptr);
  round_trip();
  EXPECT_EQ(first->CountDirty() + second->CountDirty(), 0u);
}

TEST_P(VirtqueueTest, DriverWritesGoToTheGuestDirtyLog) {
  auto guest = *DirtyLog::Create(0x300000);
  DriverQueue driver;
  ASSERT_TRUE(
      driver.Init(memory_, 0x80000, 16, GetParam().event_idx, guest).ok());
  std::set<uint64_t> ring_pages;
  guest->Harvest([&](uint64_t p) { ring_pages.insert(p); });
  EXPECT_EQ(ring_pages.size(), DriverQueue::RingBytes(16) / kPage)
      << "Init zeroes (writes) the whole ring";
  ASSERT_TRUE(driver.WriteGuest(kBufGpa, "x", 1).ok());
  EXPECT_TRUE(guest->IsPageDirty(kBufGpa / kPage));
}

TEST_P(VirtqueueTest, SetLogFromAnotherThreadIsSafe) {
  auto a = *DirtyLog::Create(0x300000);
  auto b = *DirtyLog::Create(0x300000);
  device_.SetLog(a);
  std::atomic<bool> stop{false};
  std::atomic<int> swaps{0};
  std::thread swapper([&] {
    for (int i = 0; !stop.load(); ++i) {
      device_.SetLog(i % 2 ? a : b);
      swaps.fetch_add(1);
    }
  });
  // Run until both sides made progress, however the threads are scheduled.
  for (int i = 0; i < 2000 || swaps.load() < 1000; ++i) {
    ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect()).ok());
    auto chain = device_.Pop();
    ASSERT_TRUE(chain.has_value());
    device_.PushUsed(*chain, 8);
    ASSERT_TRUE(driver_.PollUsed().has_value());
    // Every push lands in whichever log is attached, always a or b:
    // fetch-and-clear both and find this round's mark.
    bool logged = false;
    for (DirtyLog* log : {a.get(), b.get()}) {
      log->Harvest([&](uint64_t p) { logged |= p == kBufGpa / kPage; });
    }
    if (!logged) {
      stop.store(true);
      swapper.join();
      FAIL() << "round trip " << i << " was not logged";
    }
  }
  stop.store(true);
  swapper.join();
}

// ---- Notification suppression ----

TEST_P(VirtqueueTest, DeviceSuppressesAndReenablesKicks) {
  EXPECT_FALSE(driver_.NeedsKick()) << "nothing added yet";
  ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(0)).ok());
  EXPECT_TRUE(driver_.NeedsKick());
  // The device turns kicks off and drains the ring.
  device_.SetNotification(false);
  auto chain = device_.Pop();
  ASSERT_TRUE(chain.has_value());
  device_.PushUsed(*chain, 0);
  // Off: NO_NOTIFY, or with EVENT_IDX an avail_event left behind.
  ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(1)).ok());
  EXPECT_FALSE(driver_.NeedsKick());
  device_.SetNotification(true);
  // Re-enabling must be followed by a Pop: the entry added meanwhile is
  // there although no kick came.
  chain = device_.Pop();
  ASSERT_TRUE(chain.has_value());
  device_.PushUsed(*chain, 0);
  ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(2)).ok());
  EXPECT_TRUE(driver_.NeedsKick());
}

TEST_P(VirtqueueTest, EventIdxKicksOnlyWhenCrossingAvailEvent) {
  if (!GetParam().event_idx) GTEST_SKIP() << "EVENT_IDX only";
  ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(0)).ok());
  EXPECT_TRUE(driver_.NeedsKick());  // avail_event 0 crossed
  // The device has not popped: avail_event stays 0, no new kick.
  ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(1)).ok());
  EXPECT_FALSE(driver_.NeedsKick());
  ASSERT_TRUE(device_.Pop().has_value());  // avail_event := 1
  ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(2)).ok());
  EXPECT_FALSE(driver_.NeedsKick()) << "entry 1 was added before, not now";
  ASSERT_TRUE(device_.Pop().has_value());  // avail_event := 2
  ASSERT_TRUE(device_.Pop().has_value());  // avail_event := 3
  ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(3)).ok());
  EXPECT_TRUE(driver_.NeedsKick());
}

TEST_P(VirtqueueTest, DriverSuppressesAndReenablesInterrupts) {
  std::vector<DescriptorChain> chains;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(i)).ok());
  }
  while (auto c = device_.Pop()) chains.push_back(*c);
  ASSERT_EQ(chains.size(), 4u);
  device_.NeedsNotification();  // starts "pushed since" from here
  driver_.SetInterruptsEnabled(false);
  device_.PushUsed(chains[0], 0);
  EXPECT_FALSE(device_.NeedsNotification());
  EXPECT_TRUE(driver_.PollUsed().has_value());
  driver_.SetInterruptsEnabled(true);
  device_.PushUsed(chains[1], 0);
  EXPECT_TRUE(device_.NeedsNotification());
  EXPECT_FALSE(device_.NeedsNotification()) << "nothing pushed since";
}

TEST_P(VirtqueueTest, EventIdxInterruptsOnlyWhenCrossingUsedEvent) {
  if (!GetParam().event_idx) GTEST_SKIP() << "EVENT_IDX only";
  std::vector<DescriptorChain> chains;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(driver_.Add({}, {{kBufGpa, 8}}, Indirect(i)).ok());
  }
  while (auto c = device_.Pop()) chains.push_back(*c);
  device_.PushUsed(chains[0], 0);
  EXPECT_TRUE(device_.NeedsNotification()) << "first signal after setup";
  device_.PushUsed(chains[1], 0);
  // used_event is still 0: the driver has not consumed entry 0 yet.
  EXPECT_FALSE(device_.NeedsNotification());
  ASSERT_TRUE(driver_.PollUsed().has_value());
  ASSERT_TRUE(driver_.PollUsed().has_value());  // used_event := 2
  device_.PushUsed(chains[2], 0);
  EXPECT_TRUE(device_.NeedsNotification());
}

// ---- Hostile rings ----

// Writes descriptors and avail entries directly, as a malicious or buggy
// driver would.
class HostileRingTest : public ::testing::Test {
 protected:
  static constexpr uint16_t kSize = 8;
  void SetUp() override {
    memory_ = TestMemory();
    // Use DriverQueue only to lay out and zero the ring.
    DriverQueue layout_only;
    ASSERT_TRUE(layout_only.Init(memory_, kRingGpa, kSize, false).ok());
    layout_ = layout_only.layout();
    layout_.indirect_desc = true;
    ASSERT_TRUE(device_.Setup(memory_, layout_).ok());
  }

  void TableDesc(uint64_t table, uint16_t i, uint64_t addr, uint32_t len,
                 uint16_t flags, uint16_t next = 0) {
    vring_desc d{addr, len, flags, next};
    ASSERT_TRUE(memory_.Write(table + 16ull * i, &d, sizeof(d)).ok());
  }
  void Desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
            uint16_t next = 0) {
    TableDesc(layout_.desc_gpa, i, addr, len, flags, next);
  }
  void SetAvailIdx(uint16_t idx) {
    ASSERT_TRUE(memory_.Write(layout_.avail_gpa + 2, &idx, 2).ok());
  }
  void Publish(uint16_t head) {
    uint16_t slot = avail_idx_ % kSize;
    ASSERT_TRUE(memory_.Write(layout_.avail_gpa + 4 + 2 * slot, &head, 2).ok());
    SetAvailIdx(++avail_idx_);
  }
  // Pops the next chain, expects it to fail with `what` in the message,
  // completes it, then checks that a good chain still works.
  void ExpectBadChainThenGoodOne(const std::string& what) {
    auto bad = device_.Pop();
    ASSERT_TRUE(bad.has_value());
    EXPECT_FALSE(bad->status.ok());
    EXPECT_THAT(std::string(bad->status.message()), HasSubstr(what));
    EXPECT_TRUE(bad->readable.empty() && bad->writable.empty());
    EXPECT_EQ(bad->readable_len + bad->writable_len, 0u);
    device_.PushUsed(*bad, 1234);
    uint32_t used_len;
    ASSERT_TRUE(
        memory_
            .Read(layout_.used_gpa + 4 + 8 * ((avail_idx_ - 1) % kSize) + 4,
                  &used_len, 4)
            .ok());
    EXPECT_EQ(used_len, 0u) << "a bad chain completes with 0 bytes";

    Desc(7, kBufGpa, 16, VRING_DESC_F_WRITE);
    Publish(7);
    auto good = device_.Pop();
    ASSERT_TRUE(good.has_value());
    EXPECT_TRUE(good->status.ok()) << good->status;
    EXPECT_EQ(good->writable_len, 16u);
    device_.PushUsed(*good, 16);
    EXPECT_FALSE(device_.broken());
  }

  GuestMemoryMap memory_;
  VringLayout layout_;
  DeviceQueue device_;
  uint16_t avail_idx_ = 0;
};

TEST_F(HostileRingTest, LoopInChainFailsThatChainOnly) {
  Desc(0, kBufGpa, 8, VRING_DESC_F_NEXT, 1);
  Desc(1, kBufGpa, 8, VRING_DESC_F_NEXT, 0);
  Publish(0);
  ExpectBadChainThenGoodOne("loop");
}

TEST_F(HostileRingTest, SelfLoopFailsThatChainOnly) {
  Desc(3, kBufGpa, 8, VRING_DESC_F_NEXT, 3);
  Publish(3);
  ExpectBadChainThenGoodOne("loop detected at descriptor 3");
}

TEST_F(HostileRingTest, NextIndexOutOfRangeFailsThatChainOnly) {
  Desc(0, kBufGpa, 8, VRING_DESC_F_NEXT, kSize);
  Publish(0);
  ExpectBadChainThenGoodOne("descriptor 8 out of range");
}

TEST_F(HostileRingTest, HeadOutOfRangeFailsThatChainOnly) {
  Publish(kSize + 100);
  ExpectBadChainThenGoodOne("descriptor 108 out of range");
}

TEST_F(HostileRingTest, UnbackedBufferFailsThatChainOnly) {
  Desc(0, kBufGpa, 8, VRING_DESC_F_NEXT, 1);
  Desc(1, kHoleGpa, 8, VRING_DESC_F_WRITE);
  Publish(0);
  ExpectBadChainThenGoodOne("descriptor 1: buffer at gpa 0x150000");
}

TEST_F(HostileRingTest, BufferRunningIntoTheHoleFailsThatChainOnly) {
  Desc(0, 0x11f000, 0x2000, 0);  // region B ends at 0x120000
  Publish(0);
  ExpectBadChainThenGoodOne("not backed");
}

TEST_F(HostileRingTest, BufferAddressWrappingFailsThatChainOnly) {
  Desc(0, UINT64_MAX - 4, 16, 0);
  Publish(0);
  ExpectBadChainThenGoodOne("not backed");
}

TEST_F(HostileRingTest, ReadableAfterWritableFailsThatChainOnly) {
  Desc(0, kBufGpa, 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
  Desc(1, kBufGpa, 8, 0);
  Publish(0);
  ExpectBadChainThenGoodOne("descriptor 1 is readable but follows a writable");
}

TEST_F(HostileRingTest, TotalLengthBeyond32BitsFailsThatChainOnly) {
  // A sparse 2 GiB region makes huge but backed buffers possible.
  auto big = MemoryRegion::CreateMemfd({1ull << 32, 1ull << 31, 1ull << 40, 0});
  ASSERT_TRUE(big.ok()) << big.status();
  memory_ = *memory_.WithRegion(*big);
  ASSERT_TRUE(device_.UpdateMemory(memory_).ok());
  Desc(0, 1ull << 32, 0x7fffffff, VRING_DESC_F_NEXT, 1);
  Desc(1, 1ull << 32, 0x7fffffff, VRING_DESC_F_NEXT, 2);
  Desc(2, 1ull << 32, 0x7fffffff, VRING_DESC_F_WRITE);
  Publish(0);
  ExpectBadChainThenGoodOne("total length exceeds 32 bits at descriptor 2");
}

TEST_F(HostileRingTest, IndirectWithNextFailsThatChainOnly) {
  TableDesc(kBufGpa + kPage, 0, kBufGpa, 8, 0);
  Desc(0, kBufGpa + kPage, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
  Publish(0);
  ExpectBadChainThenGoodOne("both INDIRECT and NEXT");
}

TEST_F(HostileRingTest, NestedIndirectFailsThatChainOnly) {
  const uint64_t table = kBufGpa + kPage;
  TableDesc(table, 0, kBufGpa, 8, VRING_DESC_F_NEXT, 1);
  TableDesc(table, 1, table, 32, VRING_DESC_F_INDIRECT);
  Desc(0, table, 32, VRING_DESC_F_INDIRECT);
  Publish(0);
  ExpectBadChainThenGoodOne("nested indirect table at indirect descriptor 1");
}

TEST_F(HostileRingTest, IndirectLengthNotMultipleOf16FailsThatChainOnly) {
  Desc(0, kBufGpa + kPage, 24, VRING_DESC_F_INDIRECT);
  Publish(0);
  ExpectBadChainThenGoodOne("length 24 is not a non-zero multiple of 16");
}

TEST_F(HostileRingTest, EmptyIndirectTableFailsThatChainOnly) {
  Desc(0, kBufGpa + kPage, 0, VRING_DESC_F_INDIRECT);
  Publish(0);
  ExpectBadChainThenGoodOne("indirect table length 0");
}

TEST_F(HostileRingTest, IndirectWithoutTheFeatureFailsThatChainOnly) {
  layout_.indirect_desc = false;
  ASSERT_TRUE(device_.Setup(memory_, layout_).ok());
  TableDesc(kBufGpa + kPage, 0, kBufGpa, 8, 0);
  Desc(0, kBufGpa + kPage, 16, VRING_DESC_F_INDIRECT);
  Publish(0);
  ExpectBadChainThenGoodOne("VIRTIO_RING_F_INDIRECT_DESC was not negotiated");
}

TEST_F(HostileRingTest, LoopInsideIndirectTableFailsThatChainOnly) {
  const uint64_t table = kBufGpa + kPage;
  TableDesc(table, 0, kBufGpa, 8, VRING_DESC_F_NEXT, 1);
  TableDesc(table, 1, kBufGpa, 8, VRING_DESC_F_NEXT, 0);
  Desc(0, table, 32, VRING_DESC_F_INDIRECT);
  Publish(0);
  ExpectBadChainThenGoodOne("more than 2 descriptors");
}

TEST_F(HostileRingTest, IndirectNextOutOfTableFailsThatChainOnly) {
  const uint64_t table = kBufGpa + kPage;
  TableDesc(table, 0, kBufGpa, 8, VRING_DESC_F_NEXT, 2);
  Desc(0, table, 32, VRING_DESC_F_INDIRECT);
  Publish(0);
  ExpectBadChainThenGoodOne("indirect descriptor 2 out of range");
}

TEST_F(HostileRingTest, UnbackedIndirectTableFailsThatChainOnly) {
  Desc(0, kHoleGpa, 32, VRING_DESC_F_INDIRECT);
  Publish(0);
  ExpectBadChainThenGoodOne("indirect table at gpa 0x150000");
}

TEST_F(HostileRingTest, AvailIndexTooFarAheadBreaksTheQueueUntilSetup) {
  SetAvailIdx(kSize + 1);
  EXPECT_FALSE(device_.Pop().has_value());
  EXPECT_TRUE(device_.broken());
  SetAvailIdx(1);  // even a sane index is ignored now
  EXPECT_FALSE(device_.Pop().has_value());
  ASSERT_TRUE(device_.Setup(memory_, layout_).ok());
  EXPECT_FALSE(device_.broken());
  Desc(0, kBufGpa, 8, 0);
  Publish(0);  // avail idx 1 again, head 0
  auto chain = device_.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_TRUE(chain->status.ok());
}

TEST_F(HostileRingTest, AvailIndexExactlySizeAheadIsAccepted) {
  for (uint16_t i = 0; i < kSize; ++i) {
    Desc(i, kBufGpa, 8, 0);
    Publish(i);
  }
  int popped = 0;
  while (device_.Pop().has_value()) ++popped;
  EXPECT_EQ(popped, kSize);
  EXPECT_FALSE(device_.broken());
}

TEST_F(HostileRingTest, IndexWrapAt65536IsNotAJump) {
  device_.set_next_avail(65535);
  device_.set_next_used(65535);
  avail_idx_ = 65535;
  Desc(0, kBufGpa, 8, 0);
  Publish(0);  // avail idx wraps to 0
  auto chain = device_.Pop();
  ASSERT_TRUE(chain.has_value());
  EXPECT_TRUE(chain->status.ok());
  EXPECT_EQ(device_.next_avail(), 0);
  EXPECT_FALSE(device_.broken());
}

// ---- Setup validation ----

TEST(DeviceQueueSetupTest, RejectsBadSizesAndUnbackedOrMisalignedRings) {
  GuestMemoryMap memory = TestMemory();
  DeviceQueue q;
  VringLayout layout{16, kRingGpa, kRingGpa + 256, kRingGpa + kPage};
  EXPECT_TRUE(q.Setup(memory, layout).ok());
  for (uint16_t bad_size : {0, 3, 24}) {
    VringLayout l = layout;
    l.size = bad_size;
    EXPECT_FALSE(q.Setup(memory, l).ok()) << bad_size;
    EXPECT_FALSE(q.ready());
    EXPECT_FALSE(q.Pop().has_value());
  }
  VringLayout unbacked = layout;
  unbacked.used_gpa = kHoleGpa;
  EXPECT_FALSE(q.Setup(memory, unbacked).ok());
  VringLayout straddles = layout;
  straddles.desc_gpa = 0x11ff80;  // runs past region B into the hole
  EXPECT_FALSE(q.Setup(memory, straddles).ok());
  VringLayout misaligned = layout;
  misaligned.used_gpa += 2;
  EXPECT_FALSE(q.Setup(memory, misaligned).ok());
}

TEST(DeviceQueueSetupTest, UpdateMemoryFailsWhenTheRingIsNoLongerBacked) {
  GuestMemoryMap memory = TestMemory();
  DeviceQueue q;
  VringLayout layout{16, 0x200000, 0x200100, 0x201000};  // in region C
  ASSERT_TRUE(q.Setup(memory, layout).ok());
  auto without_c = memory.WithoutRegion(memory.regions()[2]->layout());
  ASSERT_TRUE(without_c.ok());
  EXPECT_FALSE(q.UpdateMemory(*without_c).ok());
  EXPECT_FALSE(q.ready());
  EXPECT_TRUE(q.UpdateMemory(memory).ok());
}

// ---- Concurrency ----

// A driver thread and a device thread busy-poll each other through the ring
// for many requests: every reply must match its request, which fails if the
// acquire/release pairs on the indices are wrong (and under --config=tsan).
TEST(VirtqueueConcurrencyTest, DriverAndDeviceThreadsExchangeManyRequests) {
  for (bool event_idx : {false, true}) {
    GuestMemoryMap memory = TestMemory();
    DriverQueue driver;
    ASSERT_TRUE(driver.Init(memory, kRingGpa, 64, event_idx).ok());
    DeviceQueue device;
    ASSERT_TRUE(device.Setup(memory, driver.layout()).ok());
    constexpr uint32_t kRequests = 20000;
    std::atomic<bool> failed{false};
    std::thread device_thread([&] {
      uint32_t served = 0;
      while (served < kRequests && !failed.load()) {
        auto chain = device.Pop();
        if (!chain.has_value()) continue;
        uint32_t seq = 0;
        if (!chain->status.ok() || chain->CopyFromReadable(0, &seq, 4) != 4) {
          failed.store(true);
          break;
        }
        const uint32_t reply = seq * 2 + 1;
        chain->CopyToWritable(0, &reply, 4);
        device.PushUsed(*chain, 4);
        ++served;
      }
    });
    // At most 32 chains are in flight (2 descriptors each), so 32 buffer
    // slots keyed by sequence number never collide.
    std::vector<uint32_t> seq_of_head(64);
    uint32_t sent = 0, received = 0;
    while (received < kRequests && !failed.load()) {
      while (sent < kRequests && driver.free_count() >= 2) {
        const uint64_t slot = sent % 32;
        const uint64_t req = kBufGpa + slot * 16, rep = req + 8;
        auto head = driver.WriteGuest(req, &sent, 4).ok()
                        ? driver.Add({{req, 4}}, {{rep, 4}})
                        : absl::InternalError("WriteGuest failed");
        if (!head.ok()) {
          ADD_FAILURE() << head.status();
          failed.store(true);
          break;
        }
        seq_of_head[*head] = sent;
        ++sent;
      }
      while (auto used = driver.PollUsed()) {
        const uint32_t seq = seq_of_head[used->head];
        uint32_t reply = 0;
        if (!memory.Read(kBufGpa + (seq % 32) * 16 + 8, &reply, 4).ok() ||
            reply != seq * 2 + 1 || used->len != 4) {
          failed.store(true);
          ADD_FAILURE() << "request " << seq << " got reply " << reply;
          break;
        }
        ++received;
      }
    }
    device_thread.join();
    EXPECT_FALSE(failed.load());
    EXPECT_EQ(received, kRequests);
  }
}

// Driver and device sleep on eventfds (kick and call) whenever they run out
// of work, relying only on the notification protocol: a lost wake-up (a
// missing fence around avail_event/used_event, or a wrong need-event test)
// leaves both asleep, and the bounded wait fails the test.
TEST(VirtqueueConcurrencyTest, NotificationProtocolLosesNoWakeups) {
  for (bool event_idx : {false, true}) {
    SCOPED_TRACE(event_idx ? "EVENT_IDX" : "flags");
    GuestMemoryMap memory = TestMemory();
    DriverQueue driver;
    ASSERT_TRUE(driver.Init(memory, kRingGpa, 16, event_idx).ok());
    DeviceQueue device;
    ASSERT_TRUE(device.Setup(memory, driver.layout()).ok());
    const int kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const int call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(kick, 0);
    ASSERT_GE(call, 0);
    auto signal = [](int fd) {
      const uint64_t one = 1;
      return write(fd, &one, sizeof(one)) == sizeof(one);
    };
    // Waits for a signal on `fd` for at most 10 s; false on timeout.
    auto wait = [](int fd) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 10000) != 1) return false;
      uint64_t count;
      return read(fd, &count, sizeof(count)) == sizeof(count);
    };
    constexpr int kRequests = 20000;
    std::atomic<bool> failed{false};
    std::thread device_thread([&] {
      int served = 0;
      while (served < kRequests && !failed.load()) {
        if (auto chain = device.Pop()) {
          device.PushUsed(*chain, 0);
          ++served;
          if (device.NeedsNotification() && !signal(call)) failed.store(true);
          continue;
        }
        if (!wait(kick)) {
          ADD_FAILURE() << "device: no kick after " << served << " requests";
          failed.store(true);
        }
      }
    });
    int sent = 0, received = 0;
    while (received < kRequests && !failed.load()) {
      bool added = false;
      while (sent < kRequests && driver.free_count() > 0) {
        if (!driver.Add({}, {{kBufGpa, 8}}).ok()) break;
        ++sent;
        added = true;
      }
      if (added && driver.NeedsKick() && !signal(kick)) failed.store(true);
      bool got = false;
      while (driver.PollUsed().has_value()) {
        ++received;
        got = true;
      }
      if (!got && received < sent && !wait(call)) {
        ADD_FAILURE() << "driver: no interrupt after " << received
                      << " completions";
        failed.store(true);
      }
    }
    failed.store(true);  // releases a device thread waiting for a kick
    signal(kick);
    device_thread.join();
    EXPECT_EQ(received, kRequests);
    close(kick);
    close(call);
  }
}

}  // namespace
}  // namespace vhostmig::vhost
