// DriverQueue: the driver (guest) side of a split virtqueue, used by the
// synthetic guest and by tests to talk to real back-ends.
//
// The ring and the buffers live in guest memory (a GuestMemoryMap the caller
// owns). Every write the driver makes to guest memory (descriptors, avail
// ring, its buffers via WriteBuffer) can be recorded in a DirtyLog that
// models what KVM would track as the guest's own writes.
//
// Thread-safety: one thread at a time.
#ifndef VHOSTMIG_VHOST_VIRTQUEUE_DRIVER_QUEUE_H_
#define VHOSTMIG_VHOST_VIRTQUEUE_DRIVER_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"
#include "vhost/virtqueue/device_queue.h"

namespace vhostmig::vhost {

// A guest buffer: guest physical address and length.
struct GuestBuffer {
  uint64_t gpa;
  uint32_t len;
};

struct UsedElement {
  uint16_t head;  // the id returned by Add()
  uint32_t len;   // bytes the device wrote
};

class DriverQueue {
 public:
  // Bytes of guest memory needed for a ring of `size` entries (descriptor
  // table, avail ring with used_event, used ring with avail_event, each
  // aligned as virtio requires) starting at a 4 KiB aligned address.
  static uint64_t RingBytes(uint16_t size);

  // Lays the ring out at `ring_gpa` (which must have RingBytes(size) backed
  // bytes) and zeroes it. `guest_dirty` may be null.
  absl::Status Init(const GuestMemoryMap& memory, uint64_t ring_gpa,
                    uint16_t size, bool event_idx,
                    std::shared_ptr<DirtyLog> guest_dirty = nullptr);

  // Rebuilds driver state from a ring already in guest memory (the synthetic
  // guest after migration): `free` bookkeeping comes from `state`.
  struct State {
    uint16_t next_avail = 0;  // avail->idx the driver will publish next
    uint16_t last_used = 0;   // used entries consumed so far
    std::vector<uint16_t> in_flight_heads;  // heads added, not yet used
  };
  State SaveState() const;
  absl::Status RestoreState(const GuestMemoryMap& memory, uint64_t ring_gpa,
                            uint16_t size, bool event_idx, const State& state,
                            std::shared_ptr<DirtyLog> guest_dirty = nullptr);

  // The layout to give the device (SET_VRING_ADDR takes front-end addresses:
  // the caller converts with its own mapping).
  VringLayout layout() const { return layout_; }

  // Adds a chain of `readable` then `writable` buffers; with `indirect`, the
  // chain is written as an indirect table at `indirect_table_gpa` (which
  // must have 16 bytes per buffer). Returns the head id, or
  // ResourceExhausted when there are not enough free descriptors. The avail
  // index is published (release) before returning.
  absl::StatusOr<uint16_t> Add(
      const std::vector<GuestBuffer>& readable,
      const std::vector<GuestBuffer>& writable,
      std::optional<uint64_t> indirect_table_gpa = std::nullopt);

  // Whether the device asked to be kicked for what was added since the last
  // call (avail_event with EVENT_IDX, else !VRING_USED_F_NO_NOTIFY).
  bool NeedsKick();

  // Next used element, or nullopt. Frees its descriptors. With EVENT_IDX
  // and interrupts enabled, nullopt is only returned after used_event was
  // published and used->idx re-read behind a full fence, so the caller may
  // then wait for an interrupt. A used element
  // whose id is not an in-flight head (a buggy or hostile device) is
  // skipped and counted in bad_used_count().
  std::optional<UsedElement> PollUsed();

  // Asks the device for interrupts (true, the default) or suppresses them:
  // VRING_AVAIL_F_NO_INTERRUPT, or with EVENT_IDX, used_event left behind.
  // After enabling, poll once more: the device may have used entries before
  // it saw the change (virtio 1.2, 2.7.10).
  void SetInterruptsEnabled(bool enabled);

  uint64_t bad_used_count() const { return bad_used_; }

  // Free descriptors left.
  uint16_t free_count() const;

  // Writes driver data into guest memory, recording it in guest_dirty.
  absl::Status WriteGuest(uint64_t gpa, const void* src, uint64_t len);

 private:
  // Maps the ring parts and resets the bookkeeping for `size` entries.
  absl::Status MapRing(const GuestMemoryMap& memory, uint64_t ring_gpa,
                       uint16_t size, bool event_idx,
                       std::shared_ptr<DirtyLog> guest_dirty);
  // Stores a 16-bit ring field shared with the device and logs it.
  void Store16(uint16_t* host, uint64_t gpa, uint16_t value,
               std::memory_order order);
  void WriteDesc(uint64_t table_gpa, uint16_t index, uint64_t addr,
                 uint32_t len, uint16_t flags, uint16_t next);

  GuestMemoryMap memory_;
  VringLayout layout_;
  std::shared_ptr<DirtyLog> guest_dirty_;
  uint16_t next_avail_ = 0;
  uint16_t last_used_ = 0;
  uint16_t kick_mark_ = 0;
  bool interrupts_enabled_ = true;
  uint64_t bad_used_ = 0;
  std::vector<uint16_t> free_;          // stack of free descriptor indices
  std::vector<uint16_t> chain_length_;  // by head: descriptors in its chain
                                        // (0: not in flight)
  // Our own copy of each descriptor's next index: freeing a chain must not
  // trust the descriptor table, which the device could have scribbled on.
  std::vector<uint16_t> shadow_next_;
  // Host pointers of the ring parts.
  uint8_t* desc_ = nullptr;
  uint16_t* avail_ = nullptr;  // flags, idx, ring[size], used_event
  uint8_t* used_ = nullptr;    // flags, idx, ring[size], avail_event
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_VIRTQUEUE_DRIVER_QUEUE_H_
