// DeviceQueue: the device (back-end) side of a virtio split virtqueue
// (virtio 1.2, 2.7 "Split Virtqueues"), over guest memory.
//
// The queue pops descriptor chains that the driver made available, hands the
// device host iovecs for the readable and writable buffers, and publishes
// used elements. It knows guest memory and the dirty log, nothing of
// vhost-user or of any device.
//
// Untrusted input: every descriptor index, address, length, flag and ring
// index comes from the guest. A bad chain (loop, index out of range, address
// not backed by memory, total length overflow, readable after writable,
// nested or malformed indirect table) fails that one chain: Pop() returns it
// with a non-OK `status`, and the device completes it with PushUsed(head, 0).
// A bad avail index (more than `size` entries ahead) marks the queue broken:
// Pop() returns nothing until Setup() is called again.
//
// The single write path: all writes the device makes to guest memory through
// this queue (used ring entries, used->idx, avail_event, and the bytes of the
// writable buffers reported in PushUsed's `written`) mark the dirty log when
// one is attached. A device that writes into the writable iovecs directly
// (e.g. via io_uring) must report the byte count it wrote in PushUsed; the
// queue then logs those pages.
//
// Thread-safety: a DeviceQueue is used by one thread at a time (its ring
// worker); SetLog may be called from another thread.
#ifndef VHOSTMIG_VHOST_VIRTQUEUE_DEVICE_QUEUE_H_
#define VHOSTMIG_VHOST_VIRTQUEUE_DEVICE_QUEUE_H_

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"

namespace vhostmig::vhost {

// Where the ring lives, in guest physical addresses, and the negotiated
// ring features.
struct VringLayout {
  uint16_t size = 0;  // number of descriptors, a power of two <= 32768
  uint64_t desc_gpa = 0;
  uint64_t avail_gpa = 0;
  uint64_t used_gpa = 0;
  bool event_idx = false;      // VIRTIO_RING_F_EVENT_IDX negotiated
  bool indirect_desc = false;  // VIRTIO_RING_F_INDIRECT_DESC negotiated
  // Where writes to the used ring are logged: SET_VRING_ADDR's
  // log_guest_addr when its VHOST_VRING_F_LOG flag is set (vhost-user.rst,
  // "Migration"). Unset: used-ring writes are not logged, buffer writes
  // still are while a log is attached.
  std::optional<uint64_t> log_used_gpa;
};

// A buffer of a chain: host address for data access, guest address for
// dirty logging.
struct ChainBuffer {
  uint64_t gpa;
  uint8_t* host;
  uint32_t len;
};

// One descriptor chain popped from the available ring.
struct DescriptorChain {
  uint16_t head = 0;
  absl::Status status;  // non-OK: malformed chain; complete with 0 bytes
  // Driver-to-device buffers, in chain order, then device-to-driver ones.
  // A buffer that spans two memory regions appears as two entries.
  std::vector<ChainBuffer> readable;
  std::vector<ChainBuffer> writable;
  uint64_t readable_len = 0;  // total bytes, fits in 32 bits when valid
  uint64_t writable_len = 0;

  std::vector<iovec> ReadableIovecs() const;
  std::vector<iovec> WritableIovecs() const;
  // Copies up to `len` bytes starting at `offset` of the readable bytes into
  // `dst`; returns the number copied.
  size_t CopyFromReadable(size_t offset, void* dst, size_t len) const;
  // Copies into the writable bytes at `offset`; returns the number copied.
  size_t CopyToWritable(size_t offset, const void* src, size_t len) const;
};

class DeviceQueue {
 public:
  DeviceQueue() = default;

  // Validates the layout against `memory` (each ring part must be backed,
  // size a power of two) and resets nothing else: the next avail index is
  // whatever set_next_avail() set (SET_VRING_BASE precedes SET_VRING_ADDR).
  absl::Status Setup(const GuestMemoryMap& memory, const VringLayout& layout);

  // Replaces the memory snapshot (SET_MEM_TABLE while running); the ring
  // addresses are re-translated. Fails if they are no longer backed.
  absl::Status UpdateMemory(const GuestMemoryMap& memory);

  // Attaches (or, with nullptr, detaches) the dirty log.
  void SetLog(std::shared_ptr<DirtyLog> log);

  bool ready() const { return ready_; }
  bool broken() const { return broken_; }
  const VringLayout& layout() const { return layout_; }

  // The index of the next available entry to consume (SET/GET_VRING_BASE).
  uint16_t next_avail() const { return next_avail_; }
  void set_next_avail(uint16_t idx) { next_avail_ = idx; }
  // The driver's current avail->idx (acquire), or next_avail() when the
  // queue is not set up. For diagnostics and "is there work" checks.
  uint16_t avail_idx() const;
  // The used index the device will write next (equal to next_avail() once
  // every popped chain has been pushed).
  uint16_t next_used() const { return next_used_; }
  void set_next_used(uint16_t idx) {
    next_used_ = idx;
    signalled_used_valid_ = false;
  }

  // Pops the next available chain, or nullopt if the driver has made none
  // available (or the queue is broken / not set up). With EVENT_IDX and
  // notifications enabled, Pop keeps avail_event at the next entry, and an
  // empty result is only returned after avail_event was published and
  // avail->idx re-read behind a full fence, so the caller may then sleep
  // until the next kick.
  std::optional<DescriptorChain> Pop();

  // Publishes a used element for `head` with `written` bytes and logs the
  // written pages. The used index is made visible with release ordering.
  void PushUsed(const DescriptorChain& chain, uint32_t written);
  // Publishes several used elements with one index update.
  void PushUsedBatch(
      const std::vector<std::pair<const DescriptorChain*, uint32_t>>& done);

  // With EVENT_IDX: whether the driver wants an interrupt for the entries
  // pushed since the last call (virtio 2.7.10); without it: whether
  // VRING_AVAIL_F_NO_INTERRUPT is clear. Resets the "pushed since" mark.
  bool NeedsNotification();

  // Enables or suppresses kicks from the driver (used->flags or, with
  // EVENT_IDX, avail_event). After enabling, the caller must check Pop()
  // once more to close the race with a driver that added work meanwhile.
  void SetNotification(bool enabled);

 private:
  // Translates the three ring parts of `layout` in `memory`.
  absl::Status MapRing(const GuestMemoryMap& memory, const VringLayout& layout);
  // Walks the chain starting at `head` into `chain`; on error returns the
  // reason (the caller clears the buffers).
  absl::Status WalkChain(uint16_t head, DescriptorChain* chain) const;
  // Writes a used element (without publishing the index).
  void WriteUsedElem(const DescriptorChain& chain, uint32_t written,
                     DirtyLog* log);
  // The single write path's logging step: every guest-memory write made by
  // the device through this queue is marked here.
  static void MarkDirty(DirtyLog* log, uint64_t gpa, uint64_t len);
  // Ring-part host pointers and guest addresses of the event fields.
  uint16_t* avail_ring() const;
  uint16_t* used_event() const;   // in the avail ring (driver writes)
  uint16_t* avail_event() const;  // in the used ring (device writes)
  uint64_t avail_event_offset() const;
  // Marks [offset, offset+len) of the used ring at layout_.log_used_gpa.
  void MarkUsedDirty(DirtyLog* log, uint64_t offset, uint64_t len) const;
  // The ring thread's view of the attached log: a plain load of
  // log_version_ per call; the shared_ptr is re-read only after SetLog.
  // (std::atomic_load of a shared_ptr takes a lock from a global pool, and
  // copying it two reference-count RMWs, on every Pop and PushUsedBatch.)
  DirtyLog* CurrentLog();

  GuestMemoryMap memory_;
  VringLayout layout_;
  std::shared_ptr<DirtyLog> log_;  // accessed with std::atomic_load/store
  // Bumped by SetLog after the store; accessed with std::atomic_ref (a
  // plain member keeps DeviceQueue movable, see BackendRing::Reset).
  uint64_t log_version_ = 0;
  // Ring thread only: the log as of seen_log_version_. Keeps a detached
  // log alive until the ring thread next runs.
  std::shared_ptr<DirtyLog> ring_log_;
  uint64_t seen_log_version_ = 0;
  bool ready_ = false;
  bool broken_ = false;
  uint16_t next_avail_ = 0;
  uint16_t next_used_ = 0;
  uint16_t signalled_used_ = 0;
  bool signalled_used_valid_ = false;
  // Whether the device currently asks for kicks (SetNotification).
  bool notification_enabled_ = true;
  // Host pointers of the ring parts (valid while memory_ holds them).
  void* desc_ = nullptr;
  void* avail_ = nullptr;
  void* used_ = nullptr;
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_VIRTQUEUE_DEVICE_QUEUE_H_
