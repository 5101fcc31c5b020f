#include "vhost/virtqueue/device_queue.h"

// The legacy part of the uapi header (vring_init, which converts void* in
// C style) does not compile as C++; we need only the structs, flags and
// vring_need_event.
#define VIRTIO_RING_NO_LEGACY
#include <linux/virtio_ring.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"

namespace vhostmig::vhost {
namespace {

// The ring structures are little-endian (virtio 1.x, 2.7); we read them
// natively.
static_assert(std::endian::native == std::endian::little,
              "split rings are read in host byte order");
static_assert(sizeof(vring_desc) == 16);
static_assert(sizeof(vring_used_elem) == 8);

constexpr uint32_t kMaxQueueSize = 32768;  // virtio 1.2, 2.7: Queue Size

// Byte sizes of the ring parts (virtio 1.2, 2.7 "Split Virtqueues"): the
// trailing event fields exist only with VIRTIO_RING_F_EVENT_IDX.
uint64_t DescBytes(uint16_t size) { return 16ull * size; }
uint64_t AvailBytes(uint16_t size, bool event_idx) {
  return 4 + 2ull * size + (event_idx ? 2 : 0);
}
uint64_t UsedBytes(uint16_t size, bool event_idx) {
  return 4 + 8ull * size + (event_idx ? 2 : 0);
}

// Guest-shared fields are accessed through atomic_ref: the other side reads
// and writes them concurrently.
uint16_t Load16(const uint16_t* p, std::memory_order order) {
  return std::atomic_ref<uint16_t>(*const_cast<uint16_t*>(p)).load(order);
}
void Store16(uint16_t* p, uint16_t v, std::memory_order order) {
  std::atomic_ref<uint16_t>(*p).store(v, order);
}

}  // namespace

std::vector<iovec> DescriptorChain::ReadableIovecs() const {
  std::vector<iovec> out;
  out.reserve(readable.size());
  for (const ChainBuffer& b : readable) out.push_back(iovec{b.host, b.len});
  return out;
}

std::vector<iovec> DescriptorChain::WritableIovecs() const {
  std::vector<iovec> out;
  out.reserve(writable.size());
  for (const ChainBuffer& b : writable) out.push_back(iovec{b.host, b.len});
  return out;
}

size_t DescriptorChain::CopyFromReadable(size_t offset, void* dst,
                                         size_t len) const {
  uint8_t* out = static_cast<uint8_t*>(dst);
  size_t copied = 0;
  for (const ChainBuffer& b : readable) {
    if (copied == len) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const size_t n = std::min<size_t>(b.len - offset, len - copied);
    std::memcpy(out + copied, b.host + offset, n);
    copied += n;
    offset = 0;
  }
  return copied;
}

size_t DescriptorChain::CopyToWritable(size_t offset, const void* src,
                                       size_t len) const {
  const uint8_t* in = static_cast<const uint8_t*>(src);
  size_t copied = 0;
  for (const ChainBuffer& b : writable) {
    if (copied == len) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const size_t n = std::min<size_t>(b.len - offset, len - copied);
    std::memcpy(b.host + offset, in + copied, n);
    copied += n;
    offset = 0;
  }
  return copied;
}

absl::Status DeviceQueue::MapRing(const GuestMemoryMap& memory,
                                  const VringLayout& layout) {
  if (layout.size == 0 || layout.size > kMaxQueueSize ||
      (layout.size & (layout.size - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("queue size %d is not a power of two in [1, %d]",
                        layout.size, kMaxQueueSize));
  }
  struct Part {
    const char* name;
    uint64_t gpa;
    uint64_t bytes;
    uint64_t align;  // virtio 1.2, 2.7 table "Virtqueue Part Alignment"
    void** host;
  };
  void* desc = nullptr;
  void* avail = nullptr;
  void* used = nullptr;
  const Part parts[] = {
      {"descriptor table", layout.desc_gpa, DescBytes(layout.size), 16, &desc},
      {"available ring", layout.avail_gpa,
       AvailBytes(layout.size, layout.event_idx), 2, &avail},
      {"used ring", layout.used_gpa, UsedBytes(layout.size, layout.event_idx),
       4, &used},
  };
  for (const Part& part : parts) {
    absl::StatusOr<uint8_t*> host = memory.Translate(part.gpa, part.bytes);
    if (!host.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s at gpa 0x%x (%d bytes) is not backed by one memory region: %s",
          part.name, part.gpa, part.bytes, host.status().message()));
    }
    // The ring fields are accessed atomically, which needs natural alignment
    // of the host address (and the spec requires it of the guest address).
    if (part.gpa % part.align != 0 ||
        reinterpret_cast<uintptr_t>(*host) % part.align != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s at gpa 0x%x is not %d-byte aligned", part.name,
                          part.gpa, part.align));
    }
    *part.host = *host;
  }
  desc_ = desc;
  avail_ = avail;
  used_ = used;
  return absl::OkStatus();
}

absl::Status DeviceQueue::Setup(const GuestMemoryMap& memory,
                                const VringLayout& layout) {
  ready_ = false;
  absl::Status status = MapRing(memory, layout);
  if (!status.ok()) return status;
  memory_ = memory;
  layout_ = layout;
  broken_ = false;
  signalled_used_valid_ = false;
  notification_enabled_ = true;
  ready_ = true;
  return absl::OkStatus();
}

absl::Status DeviceQueue::UpdateMemory(const GuestMemoryMap& memory) {
  if (!ready_) {
    memory_ = memory;
    return absl::OkStatus();
  }
  absl::Status status = MapRing(memory, layout_);
  if (!status.ok()) {
    ready_ = false;
    return status;
  }
  memory_ = memory;
  return absl::OkStatus();
}

void DeviceQueue::SetLog(std::shared_ptr<DirtyLog> log) {
  std::atomic_store(&log_, std::move(log));
  std::atomic_ref<uint64_t>(log_version_)
      .fetch_add(1, std::memory_order_release);
}

DirtyLog* DeviceQueue::CurrentLog() {
  const uint64_t v =
      std::atomic_ref<uint64_t>(log_version_).load(std::memory_order_acquire);
  if (v != seen_log_version_) {
    ring_log_ = std::atomic_load(&log_);
    seen_log_version_ = v;
  }
  return ring_log_.get();
}

void DeviceQueue::MarkDirty(DirtyLog* log, uint64_t gpa, uint64_t len) {
  if (log != nullptr) log->MarkRange(gpa, len);
}

void DeviceQueue::MarkUsedDirty(DirtyLog* log, uint64_t offset,
                                uint64_t len) const {
  if (log != nullptr && layout_.log_used_gpa.has_value()) {
    log->MarkRange(*layout_.log_used_gpa + offset, len);
  }
}

uint16_t* DeviceQueue::avail_ring() const {
  return static_cast<vring_avail*>(avail_)->ring;
}
uint16_t* DeviceQueue::used_event() const {
  return avail_ring() + layout_.size;
}
uint16_t* DeviceQueue::avail_event() const {
  return reinterpret_cast<uint16_t*>(static_cast<vring_used*>(used_)->ring +
                                     layout_.size);
}
uint64_t DeviceQueue::avail_event_offset() const {
  return 4 + 8ull * layout_.size;
}

uint16_t DeviceQueue::avail_idx() const {
  if (!ready_) return next_avail_;
  return Load16(&static_cast<vring_avail*>(avail_)->idx,
                std::memory_order_acquire);
}

absl::Status DeviceQueue::WalkChain(uint16_t head,
                                    DescriptorChain* chain) const {
  const uint8_t* table = static_cast<const uint8_t*>(desc_);
  uint32_t table_size = layout_.size;
  uint32_t max_descriptors = layout_.size;
  bool indirect = false;
  uint32_t index = head;
  uint32_t count = 0;
  bool seen_writable = false;
  uint64_t total = 0;
  std::vector<iovec> iov;
  auto where = [&]() {
    return indirect ? absl::StrFormat("indirect descriptor %d", index)
                    : absl::StrFormat("descriptor %d", index);
  };
  while (true) {
    if (index >= table_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chain %d: %s out of range (%s has %d entries)", head, where(),
          indirect ? "indirect table" : "descriptor table", table_size));
    }
    if (++count > max_descriptors) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chain %d: loop detected at %s (more than %d descriptors)", head,
          where(), max_descriptors));
    }
    // One copy of the descriptor: the guest may rewrite it concurrently, and
    // every check below must see the same values the walk then uses.
    vring_desc desc;
    std::memcpy(&desc, table + 16ull * index, sizeof(desc));
    if (desc.flags & VRING_DESC_F_INDIRECT) {
      // virtio 1.2, 2.7.5.3 "Indirect Descriptors".
      if (indirect) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chain %d: nested indirect table at %s", head, where()));
      }
      if (!layout_.indirect_desc) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chain %d: %s is indirect but VIRTIO_RING_F_INDIRECT_DESC was not "
            "negotiated",
            head, where()));
      }
      if (desc.flags & VRING_DESC_F_NEXT) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chain %d: %s has both INDIRECT and NEXT", head, where()));
      }
      if (desc.len == 0 || desc.len % sizeof(vring_desc) != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chain %d: %s: indirect table length %d is not a non-zero "
            "multiple of 16",
            head, where(), desc.len));
      }
      absl::StatusOr<uint8_t*> host = memory_.Translate(desc.addr, desc.len);
      if (!host.ok()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chain %d: %s: indirect table at gpa 0x%x (%d bytes) is not "
            "backed by one memory region",
            head, where(), desc.addr, desc.len));
      }
      table = *host;
      table_size = desc.len / sizeof(vring_desc);
      max_descriptors = table_size;
      indirect = true;
      index = 0;
      count = 0;
      continue;
    }
    const bool writable = desc.flags & VRING_DESC_F_WRITE;
    if (!writable && seen_writable) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chain %d: %s is readable but follows a writable descriptor", head,
          where()));
    }
    seen_writable |= writable;
    total += desc.len;
    if (total > UINT32_MAX) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "chain %d: total length exceeds 32 bits at %s", head, where()));
    }
    std::vector<ChainBuffer>& out =
        writable ? chain->writable : chain->readable;
    // Fast path: the buffer lies in one region (nearly always).
    if (absl::StatusOr<uint8_t*> host = memory_.Translate(desc.addr, desc.len);
        host.ok()) {
      if (desc.len != 0) out.push_back(ChainBuffer{desc.addr, *host, desc.len});
    } else {
      iov.clear();
      absl::Status status =
          memory_.TranslateToIovecs(desc.addr, desc.len, &iov);
      if (!status.ok()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "chain %d: %s: buffer at gpa 0x%x (%d bytes) is not backed by "
            "guest memory",
            head, where(), desc.addr, desc.len));
      }
      uint64_t gpa = desc.addr;
      for (const iovec& v : iov) {
        out.push_back(ChainBuffer{gpa, static_cast<uint8_t*>(v.iov_base),
                                  static_cast<uint32_t>(v.iov_len)});
        gpa += v.iov_len;
      }
    }
    (writable ? chain->writable_len : chain->readable_len) += desc.len;
    if (!(desc.flags & VRING_DESC_F_NEXT)) return absl::OkStatus();
    index = desc.next;
  }
}

std::optional<DescriptorChain> DeviceQueue::Pop() {
  if (!ready_ || broken_) return std::nullopt;
  auto* avail = static_cast<vring_avail*>(avail_);
  // Acquire pairs with the driver's release of avail->idx: the ring entry
  // and the descriptors it names are read only after this load.
  uint16_t avail_idx = Load16(&avail->idx, std::memory_order_acquire);
  uint16_t pending = static_cast<uint16_t>(avail_idx - next_avail_);
  if (pending == 0 && layout_.event_idx && notification_enabled_) {
    // Before reporting "empty" (after which the caller sleeps until a
    // kick), make sure the driver will kick for the next entry: avail_event
    // must be visible before avail->idx is read again, or a driver that
    // publishes meanwhile and reads a stale avail_event skips the kick
    // while we miss its entry (virtio 1.2, 2.7.10; Linux vhost_enable_notify).
    if (Load16(avail_event(), std::memory_order_relaxed) != next_avail_) {
      Store16(avail_event(), next_avail_, std::memory_order_relaxed);
      MarkUsedDirty(CurrentLog(), avail_event_offset(), sizeof(uint16_t));
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    avail_idx = Load16(&avail->idx, std::memory_order_acquire);
    pending = static_cast<uint16_t>(avail_idx - next_avail_);
  }
  if (pending == 0) return std::nullopt;
  if (pending > layout_.size) {
    // virtio 1.2, 2.7.13: the driver can never have more than size entries
    // outstanding; anything else is a corrupt (or hostile) index.
    broken_ = true;
    return std::nullopt;
  }
  DescriptorChain chain;
  chain.head = Load16(&avail_ring()[next_avail_ % layout_.size],
                      std::memory_order_relaxed);
  ++next_avail_;
  if (layout_.event_idx && notification_enabled_) {
    // Ask for a kick once the driver makes the entry after this one
    // available (virtio 1.2, 2.7.10).
    Store16(avail_event(), next_avail_, std::memory_order_relaxed);
    MarkUsedDirty(CurrentLog(), avail_event_offset(), sizeof(uint16_t));
  }
  absl::Status status = WalkChain(chain.head, &chain);
  if (!status.ok()) {
    chain.status = std::move(status);
    chain.readable.clear();
    chain.writable.clear();
    chain.readable_len = 0;
    chain.writable_len = 0;
  }
  return chain;
}

void DeviceQueue::WriteUsedElem(const DescriptorChain& chain, uint32_t written,
                                DirtyLog* log) {
  // Never report (or log) more than the chain could hold.
  written = static_cast<uint32_t>(
      std::min<uint64_t>(written, chain.status.ok() ? chain.writable_len : 0));
  uint64_t left = written;
  for (const ChainBuffer& b : chain.writable) {
    if (left == 0) break;
    const uint64_t n = std::min<uint64_t>(left, b.len);
    MarkDirty(log, b.gpa, n);
    left -= n;
  }
  const uint16_t slot = next_used_ % layout_.size;
  vring_used_elem elem;
  elem.id = chain.head;
  elem.len = written;
  std::memcpy(&static_cast<vring_used*>(used_)->ring[slot], &elem,
              sizeof(elem));
  ++next_used_;  // the element is logged by PushUsedBatch, with its batch
}

void DeviceQueue::PushUsed(const DescriptorChain& chain, uint32_t written) {
  PushUsedBatch({{&chain, written}});
}

void DeviceQueue::PushUsedBatch(
    const std::vector<std::pair<const DescriptorChain*, uint32_t>>& done) {
  if (!ready_ || done.empty()) return;
  DirtyLog* log = CurrentLog();
  const uint64_t first_slot = next_used_ % layout_.size;
  for (const auto& [chain, written] : done) {
    WriteUsedElem(*chain, written, log);
  }
  // Release: the driver that sees the new index sees the elements and the
  // buffer contents (virtio 1.2, 2.7.8.2).
  Store16(&static_cast<vring_used*>(used_)->idx, next_used_,
          std::memory_order_release);
  if (log != nullptr) {
    // The batch's elements are consecutive slots (wrapping at most once
    // when the batch is shorter than the ring): one or two marks, not one
    // per element. Then the index.
    const uint64_t n = std::min<uint64_t>(done.size(), layout_.size);
    const uint64_t head = std::min<uint64_t>(n, layout_.size - first_slot);
    MarkUsedDirty(log, 4 + 8 * first_slot, 8 * head);
    if (n > head) MarkUsedDirty(log, 4, 8 * (n - head));
    MarkUsedDirty(log, 2, sizeof(uint16_t));
  }
}

bool DeviceQueue::NeedsNotification() {
  if (!ready_) return false;
  // The used index store must be visible before the driver's suppression
  // fields are read, or a driver that just re-enabled interrupts and
  // re-checked the ring could miss both (virtio 1.2, 2.7.10; Linux
  // vhost_notify's smp_mb()).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  const uint16_t old_used = signalled_used_;
  const bool valid = signalled_used_valid_;
  signalled_used_ = next_used_;
  signalled_used_valid_ = true;
  if (layout_.event_idx) {
    if (!valid) return true;
    const uint16_t event = Load16(used_event(), std::memory_order_relaxed);
    return vring_need_event(event, next_used_, old_used);
  }
  if (valid && old_used == next_used_) return false;
  const uint16_t flags = Load16(&static_cast<vring_avail*>(avail_)->flags,
                                std::memory_order_relaxed);
  return !(flags & VRING_AVAIL_F_NO_INTERRUPT);
}

void DeviceQueue::SetNotification(bool enabled) {
  notification_enabled_ = enabled;
  if (!ready_) return;
  DirtyLog* log = CurrentLog();
  if (layout_.event_idx) {
    // With EVENT_IDX the driver ignores used->flags; suppression is simply
    // not moving avail_event forward. Enabling points it at the next entry.
    if (enabled) {
      Store16(avail_event(), next_avail_, std::memory_order_relaxed);
      MarkUsedDirty(log, avail_event_offset(), sizeof(uint16_t));
    }
  } else {
    auto* used = static_cast<vring_used*>(used_);
    const uint16_t flags = Load16(&used->flags, std::memory_order_relaxed);
    const uint16_t new_flags = enabled ? (flags & ~VRING_USED_F_NO_NOTIFY)
                                       : (flags | VRING_USED_F_NO_NOTIFY);
    Store16(&used->flags, new_flags, std::memory_order_relaxed);
    MarkUsedDirty(log, 0, sizeof(uint16_t));
  }
  if (enabled) {
    // Pairs with the driver's barrier between publishing avail->idx and
    // reading the suppression field: either it sees notifications enabled
    // or our next Pop() sees its entry.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

}  // namespace vhostmig::vhost
