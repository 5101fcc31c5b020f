// Fuzz target: a hostile driver's split ring, walked by DeviceQueue.
//
// The input is a small header and a memory image:
//   byte 0     bit 0 EVENT_IDX, bit 1 INDIRECT_DESC negotiated,
//              bits 2-4 log2 of the queue size (1..128)
//   bytes 1-2  the device's next avail index (LE), so index wrap is reached
//   bytes 3-4  the `written` length the device reports for each chain (LE)
//   bytes 5..  copied to guest physical address 0: the descriptor table at
//              0, the avail ring right after it, then free bytes for
//              indirect tables and buffers
// Guest memory is region A [0, 0x10000) and region B [0x10000, 0x14000)
// (adjacent, so buffers may span them), a hole, and region C [0x20000,
// 0x21000). The used ring sits at 0x8000, above the image.
//
// Every chain is popped, its buffers read and written, and completed; the
// invariants of a returned chain are checked and a violation traps. Nothing
// a guest writes may crash the device or make it touch unbacked memory.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/virtqueue/device_queue.h"

namespace {

using vhostmig::vhost::DescriptorChain;
using vhostmig::vhost::DeviceQueue;
using vhostmig::vhost::DirtyLog;
using vhostmig::vhost::GuestMemoryMap;
using vhostmig::vhost::MemoryRegion;
using vhostmig::vhost::VringLayout;

constexpr uint64_t kImageLimit = 0x8000;
constexpr uint64_t kUsedGpa = 0x8000;

struct Guest {
  GuestMemoryMap memory;
  std::shared_ptr<DirtyLog> log;
};

// Mapping memfds per input would dominate the run time: map once, reset
// region contents per input.
Guest& SharedGuest() {
  static Guest* guest = [] {
    auto* g = new Guest;
    std::vector<std::shared_ptr<MemoryRegion>> regions;
    for (auto [gpa, size] : {std::pair<uint64_t, uint64_t>{0, 0x10000},
                             {0x10000, 0x4000},
                             {0x20000, 0x1000}}) {
      regions.push_back(
          *MemoryRegion::CreateMemfd({gpa, size, 0x7f0000000000 + gpa, 0}));
    }
    g->memory = *GuestMemoryMap::Create(std::move(regions));
    g->log = *DirtyLog::Create(0x21000);
    return g;
  }();
  return *guest;
}

// CHAIN_FUZZ_VERBOSE=1 prints each chain's outcome (for checking seeds).
bool Verbose() {
  static const bool verbose = std::getenv("CHAIN_FUZZ_VERBOSE") != nullptr;
  return verbose;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckChain(const GuestMemoryMap& memory, const DescriptorChain& chain) {
  if (!chain.status.ok()) {
    Check(chain.readable.empty() && chain.writable.empty());
    Check(chain.readable_len == 0 && chain.writable_len == 0);
    return;
  }
  Check(chain.readable_len + chain.writable_len <= UINT32_MAX);
  uint64_t sum = 0;
  for (const auto& b : chain.readable) {
    auto host = memory.Translate(b.gpa, b.len);
    Check(host.ok() && *host == b.host);
    sum += b.len;
  }
  Check(sum == chain.readable_len);
  sum = 0;
  for (const auto& b : chain.writable) {
    auto host = memory.Translate(b.gpa, b.len);
    Check(host.ok() && *host == b.host);
    sum += b.len;
  }
  Check(sum == chain.writable_len);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  Guest& guest = SharedGuest();
  for (const auto& r : guest.memory.regions())
    std::memset(r->host(), 0, r->size());
  guest.log->Harvest([](uint64_t) {});

  const uint8_t config = data[0];
  uint16_t next_avail, written;
  std::memcpy(&next_avail, data + 1, 2);
  std::memcpy(&written, data + 3, 2);
  const size_t image = std::min<size_t>(size - 5, kImageLimit);
  Check(guest.memory.Write(0, data + 5, image).ok());

  VringLayout layout;
  layout.size = uint16_t{1} << ((config >> 2) & 7);
  layout.desc_gpa = 0;
  layout.avail_gpa = 16ull * layout.size;
  layout.used_gpa = kUsedGpa;
  layout.event_idx = config & 1;
  layout.indirect_desc = config & 2;

  DeviceQueue queue;
  queue.set_next_avail(next_avail);
  queue.set_next_used(next_avail);
  Check(queue.Setup(guest.memory, layout).ok());
  queue.SetLog(guest.log);
  queue.SetNotification(false);

  std::vector<uint8_t> scratch(1 << 16);
  // At most `size` entries can be pending; one more pass checks the end.
  for (int i = 0; i <= layout.size; ++i) {
    std::optional<DescriptorChain> chain = queue.Pop();
    if (!chain.has_value()) break;
    CheckChain(guest.memory, *chain);
    if (Verbose()) {
      std::fprintf(stderr, "chain %d: %s (r %llu w %llu)\n", chain->head,
                   chain->status.ToString().c_str(),
                   static_cast<unsigned long long>(chain->readable_len),
                   static_cast<unsigned long long>(chain->writable_len));
    }
    chain->CopyFromReadable(0, scratch.data(), scratch.size());
    const size_t n = chain->CopyToWritable(
        0, scratch.data(), std::min<size_t>(written, scratch.size()));
    Check(n <= chain->writable_len);
    queue.PushUsed(*chain, written);
  }
  if (Verbose() && queue.broken()) std::fprintf(stderr, "queue broken\n");
  queue.SetNotification(true);
  (void)queue.NeedsNotification();
  // Whatever happened, the device wrote nothing it did not log, and logged
  // nothing outside guest memory.
  Check(guest.log->dropped_marks() == 0);
  return 0;
}
