#include "vhost/virtqueue/driver_queue.h"

// The legacy part of the uapi header (vring_init, which converts void* in
// C style) does not compile as C++; we need only the structs, flags and
// vring_need_event.
#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_ring.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace vhostmig::vhost {
namespace {

constexpr uint64_t kPage = 4096;

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

// Offsets inside the ring area. The used ring gets its own page(s) so that
// the device's writes (used ring) and the driver's (descriptors, avail ring)
// dirty disjoint pages, which keeps dirty-log accounting easy to check.
uint64_t AvailOffset(uint16_t size) { return 16ull * size; }
uint64_t UsedOffset(uint16_t size) {
  return AlignUp(AvailOffset(size) + 6 + 2ull * size, kPage);
}

uint16_t Load16(const void* p, std::memory_order order) {
  return std::atomic_ref<uint16_t>(
             *static_cast<uint16_t*>(const_cast<void*>(p)))
      .load(order);
}

}  // namespace

uint64_t DriverQueue::RingBytes(uint16_t size) {
  return AlignUp(UsedOffset(size) + 6 + 8ull * size, kPage);
}

absl::Status DriverQueue::MapRing(const GuestMemoryMap& memory,
                                  uint64_t ring_gpa, uint16_t size,
                                  bool event_idx,
                                  std::shared_ptr<DirtyLog> guest_dirty) {
  if (size == 0 || size > 32768 || (size & (size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue size %d is not a power of two <= 32768", size));
  }
  if (ring_gpa % kPage != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ring address 0x%x is not 4 KiB aligned", ring_gpa));
  }
  absl::StatusOr<uint8_t*> host = memory.Translate(ring_gpa, RingBytes(size));
  if (!host.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ring of size %d at 0x%x: %s", size, ring_gpa,
                        host.status().message()));
  }
  if (reinterpret_cast<uintptr_t>(*host) % 16 != 0) {
    return absl::InvalidArgumentError("ring host address is misaligned");
  }
  memory_ = memory;
  guest_dirty_ = std::move(guest_dirty);
  layout_ = VringLayout{};
  layout_.size = size;
  layout_.desc_gpa = ring_gpa;
  layout_.avail_gpa = ring_gpa + AvailOffset(size);
  layout_.used_gpa = ring_gpa + UsedOffset(size);
  layout_.event_idx = event_idx;
  desc_ = *host;
  avail_ = reinterpret_cast<uint16_t*>(*host + AvailOffset(size));
  used_ = *host + UsedOffset(size);
  chain_length_.assign(size, 0);
  shadow_next_.assign(size, 0);
  free_.clear();
  bad_used_ = 0;
  interrupts_enabled_ = true;
  return absl::OkStatus();
}

absl::Status DriverQueue::Init(const GuestMemoryMap& memory, uint64_t ring_gpa,
                               uint16_t size, bool event_idx,
                               std::shared_ptr<DirtyLog> guest_dirty) {
  absl::Status status =
      MapRing(memory, ring_gpa, size, event_idx, std::move(guest_dirty));
  if (!status.ok()) return status;
  const std::vector<uint8_t> zeros(RingBytes(size), 0);
  status = WriteGuest(ring_gpa, zeros.data(), zeros.size());
  if (!status.ok()) return status;
  for (int i = size - 1; i >= 0; --i) free_.push_back(static_cast<uint16_t>(i));
  next_avail_ = 0;
  last_used_ = 0;
  kick_mark_ = 0;
  return absl::OkStatus();
}

DriverQueue::State DriverQueue::SaveState() const {
  State state;
  state.next_avail = next_avail_;
  state.last_used = last_used_;
  for (uint16_t i = 0; i < chain_length_.size(); ++i) {
    if (chain_length_[i] != 0) state.in_flight_heads.push_back(i);
  }
  return state;
}

absl::Status DriverQueue::RestoreState(const GuestMemoryMap& memory,
                                       uint64_t ring_gpa, uint16_t size,
                                       bool event_idx, const State& state,
                                       std::shared_ptr<DirtyLog> guest_dirty) {
  absl::Status status =
      MapRing(memory, ring_gpa, size, event_idx, std::move(guest_dirty));
  if (!status.ok()) return status;
  // Rebuild the chains of in-flight heads from the descriptor table we wrote
  // before migration (it moved with guest memory).
  std::vector<bool> used(size, false);
  for (uint16_t head : state.in_flight_heads) {
    uint16_t index = head;
    uint16_t length = 0;
    while (true) {
      if (index >= size || used[index] || length >= size) {
        return absl::DataLossError(absl::StrFormat(
            "restored ring: chain %d is corrupt at descriptor %d", head,
            index));
      }
      used[index] = true;
      ++length;
      vring_desc desc;
      std::memcpy(&desc, desc_ + 16ull * index, sizeof(desc));
      shadow_next_[index] = desc.next;
      if (!(desc.flags & VRING_DESC_F_NEXT)) break;
      index = desc.next;
    }
    chain_length_[head] = length;
  }
  for (int i = size - 1; i >= 0; --i) {
    if (!used[i]) free_.push_back(static_cast<uint16_t>(i));
  }
  next_avail_ = state.next_avail;
  last_used_ = state.last_used;
  kick_mark_ = state.next_avail;
  return absl::OkStatus();
}

absl::Status DriverQueue::WriteGuest(uint64_t gpa, const void* src,
                                     uint64_t len) {
  absl::Status status = memory_.Write(gpa, src, len);
  if (!status.ok()) return status;
  // The guest's own writes, as KVM's dirty tracking would see them.
  if (guest_dirty_ != nullptr) guest_dirty_->MarkRange(gpa, len);
  return absl::OkStatus();
}

void DriverQueue::Store16(uint16_t* host, uint64_t gpa, uint16_t value,
                          std::memory_order order) {
  std::atomic_ref<uint16_t>(*host).store(value, order);
  if (guest_dirty_ != nullptr) guest_dirty_->MarkRange(gpa, sizeof(value));
}

void DriverQueue::WriteDesc(uint64_t table_gpa, uint16_t index, uint64_t addr,
                            uint32_t len, uint16_t flags, uint16_t next) {
  vring_desc desc;
  desc.addr = addr;
  desc.len = len;
  desc.flags = flags;
  desc.next = next;
  // The table was validated (ring) or the caller vouched for it (indirect):
  // a failure here is the caller's bug, reported by Add's pre-check.
  (void)WriteGuest(table_gpa + 16ull * index, &desc, sizeof(desc));
}

absl::StatusOr<uint16_t> DriverQueue::Add(
    const std::vector<GuestBuffer>& readable,
    const std::vector<GuestBuffer>& writable,
    std::optional<uint64_t> indirect_table_gpa) {
  if (desc_ == nullptr) {
    return absl::FailedPreconditionError("driver queue not initialized");
  }
  const size_t n = readable.size() + writable.size();
  if (n == 0) return absl::InvalidArgumentError("empty chain");
  auto buffer = [&](size_t i) -> std::pair<GuestBuffer, uint16_t> {
    if (i < readable.size()) return {readable[i], 0};
    return {writable[i - readable.size()], VRING_DESC_F_WRITE};
  };
  uint16_t head;
  if (indirect_table_gpa.has_value()) {
    if (n > 0xffffffffu / 16) {
      return absl::InvalidArgumentError("indirect table too large");
    }
    absl::StatusOr<uint8_t*> table =
        memory_.Translate(*indirect_table_gpa, 16 * n);
    if (!table.ok()) return table.status();
    if (free_.empty()) {
      return absl::ResourceExhaustedError("no free descriptor for the chain");
    }
    for (size_t i = 0; i < n; ++i) {
      auto [b, flags] = buffer(i);
      const bool last = i + 1 == n;
      WriteDesc(*indirect_table_gpa, static_cast<uint16_t>(i), b.gpa, b.len,
                flags | (last ? 0 : VRING_DESC_F_NEXT),
                last ? 0 : static_cast<uint16_t>(i + 1));
    }
    head = free_.back();
    free_.pop_back();
    WriteDesc(layout_.desc_gpa, head, *indirect_table_gpa,
              static_cast<uint32_t>(16 * n), VRING_DESC_F_INDIRECT, 0);
    shadow_next_[head] = 0;
    chain_length_[head] = 1;
  } else {
    if (n > layout_.size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("chain of %d buffers is longer than the queue (%d)",
                          n, layout_.size));
    }
    if (free_.size() < n) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "chain needs %d descriptors, %d free", n, free_.size()));
    }
    // Take the indices first so each descriptor can name its successor.
    std::vector<uint16_t> indices(free_.end() - n, free_.end());
    std::reverse(indices.begin(), indices.end());
    free_.resize(free_.size() - n);
    for (size_t i = 0; i < n; ++i) {
      auto [b, flags] = buffer(i);
      const bool last = i + 1 == n;
      const uint16_t next = last ? 0 : indices[i + 1];
      WriteDesc(layout_.desc_gpa, indices[i], b.gpa, b.len,
                flags | (last ? 0 : VRING_DESC_F_NEXT), next);
      shadow_next_[indices[i]] = next;
    }
    head = indices[0];
    chain_length_[head] = static_cast<uint16_t>(n);
  }
  // virtio 1.2, 2.7.13: ring entry first, then (release) the index.
  const uint16_t slot = next_avail_ % layout_.size;
  Store16(&avail_[2 + slot], layout_.avail_gpa + 4 + 2ull * slot, head,
          std::memory_order_relaxed);
  ++next_avail_;
  Store16(&avail_[1], layout_.avail_gpa + 2, next_avail_,
          std::memory_order_release);
  return head;
}

bool DriverQueue::NeedsKick() {
  if (desc_ == nullptr) return false;
  // The avail index store must be visible before we read the device's
  // suppression field (virtio 1.2, 2.7.13.4; Linux virtqueue_kick_prepare).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old = kick_mark_;
  kick_mark_ = next_avail_;
  if (old == next_avail_) return false;
  if (layout_.event_idx) {
    const uint16_t avail_event =
        Load16(used_ + 4 + 8ull * layout_.size, std::memory_order_relaxed);
    return vring_need_event(avail_event, next_avail_, old);
  }
  return !(Load16(used_, std::memory_order_relaxed) & VRING_USED_F_NO_NOTIFY);
}

std::optional<UsedElement> DriverQueue::PollUsed() {
  if (desc_ == nullptr) return std::nullopt;
  while (true) {
    // Acquire pairs with the device's release of used->idx.
    uint16_t used_idx = Load16(used_ + 2, std::memory_order_acquire);
    if (used_idx == last_used_ && layout_.event_idx && interrupts_enabled_) {
      // Before reporting "nothing" (after which the caller waits for an
      // interrupt), used_event must be visible before used->idx is read
      // again, or a device that completes meanwhile may read a stale
      // used_event and not interrupt (Linux virtqueue_enable_cb_prepare).
      uint16_t* used_event = &avail_[2 + layout_.size];
      if (Load16(used_event, std::memory_order_relaxed) != last_used_) {
        Store16(used_event, layout_.avail_gpa + 4 + 2ull * layout_.size,
                last_used_, std::memory_order_relaxed);
      }
      std::atomic_thread_fence(std::memory_order_seq_cst);
      used_idx = Load16(used_ + 2, std::memory_order_acquire);
    }
    if (used_idx == last_used_) return std::nullopt;
    const uint16_t slot = last_used_ % layout_.size;
    vring_used_elem elem;
    std::memcpy(&elem, used_ + 4 + 8ull * slot, sizeof(elem));
    ++last_used_;
    if (layout_.event_idx && interrupts_enabled_) {
      // Interrupt me when the next entry is used.
      Store16(&avail_[2 + layout_.size],
              layout_.avail_gpa + 4 + 2ull * layout_.size, last_used_,
              std::memory_order_relaxed);
    }
    if (elem.id >= layout_.size || chain_length_[elem.id] == 0) {
      ++bad_used_;
      continue;
    }
    uint16_t index = static_cast<uint16_t>(elem.id);
    for (uint16_t i = 0; i < chain_length_[elem.id]; ++i) {
      free_.push_back(index);
      index = shadow_next_[index];
    }
    chain_length_[elem.id] = 0;
    return UsedElement{static_cast<uint16_t>(elem.id), elem.len};
  }
}

void DriverQueue::SetInterruptsEnabled(bool enabled) {
  interrupts_enabled_ = enabled;
  if (desc_ == nullptr) return;
  if (layout_.event_idx) {
    // last_used - 1 is an index the device can never cross again before
    // 65535 more completions, so it suppresses; last_used re-arms.
    const uint16_t event = enabled ? last_used_ : last_used_ - 1;
    Store16(&avail_[2 + layout_.size],
            layout_.avail_gpa + 4 + 2ull * layout_.size, event,
            std::memory_order_relaxed);
  } else {
    const uint16_t flags = Load16(&avail_[0], std::memory_order_relaxed);
    Store16(&avail_[0], layout_.avail_gpa,
            enabled ? (flags & ~VRING_AVAIL_F_NO_INTERRUPT)
                    : (flags | VRING_AVAIL_F_NO_INTERRUPT),
            std::memory_order_relaxed);
  }
  if (enabled) std::atomic_thread_fence(std::memory_order_seq_cst);
}

uint16_t DriverQueue::free_count() const {
  return static_cast<uint16_t>(free_.size());
}

}  // namespace vhostmig::vhost
