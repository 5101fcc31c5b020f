// DirtyLog: the shared-memory bitmap of guest pages written by a back-end
// (vhost-user.rst, "Migration" / "Dirty log"). Bit N of the log (bit N%8 of
// byte N/8) covers guest physical page N of kDirtyPageSize bytes.
//
// Writers (ring workers of a back-end, or the synthetic guest's vCPU model)
// set bits with atomic OR, so concurrent writers and a concurrent harvester
// never lose a bit. The front-end harvests by atomically exchanging each
// 64-bit word with zero, which is the fetch-and-clear the migration
// coordinator needs for pre-copy rounds.
//
// The back-end receives its log in SET_LOG_BASE as an fd plus {size, offset};
// it may receive a new one at any time (memory hotplug), so users hold it by
// shared_ptr and swap the pointer; the old mapping dies with its last user.
//
// Marking uses release ordering and harvesting acquire, so a harvester that
// sees a bit also sees the guest-memory write that preceded the mark: mark
// after writing, never before.
//
// Thread-safety: all methods may be called concurrently.
#ifndef VHOSTMIG_VHOST_MEMORY_DIRTY_LOG_H_
#define VHOSTMIG_VHOST_MEMORY_DIRTY_LOG_H_

#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace vhostmig::vhost {

inline constexpr uint64_t kDirtyPageSize = 4096;

// Bit N%64 of 64-bit word N/64 is bit N%8 of byte N/8 only on little-endian
// hosts, which is what the word-at-a-time paths rely on.
static_assert(std::endian::native == std::endian::little,
              "DirtyLog word access assumes a little-endian host");

class DirtyLog {
 public:
  // Back-end side: maps `size` bytes of `fd` at `offset` (SET_LOG_BASE).
  // Fails on a zero size, an overflowing range or mmap failure.
  static absl::StatusOr<std::shared_ptr<DirtyLog>> Map(UniqueFd fd,
                                                       uint64_t size,
                                                       uint64_t offset);

  // Front-end side: a zeroed memfd-backed log large enough for guest
  // physical addresses below `guest_end` (size rounded up to 8 bytes).
  static absl::StatusOr<std::shared_ptr<DirtyLog>> Create(uint64_t guest_end);

  ~DirtyLog();
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // Size of the bitmap in bytes, and the fd/offset to pass in SET_LOG_BASE.
  uint64_t size_bytes() const { return size_; }
  int fd() const { return fd_.get(); }
  uint64_t offset() const { return offset_; }
  // Number of pages the log can describe.
  uint64_t page_count() const { return size_ * 8; }

  // Marks every page overlapping [gpa, gpa+len). Bits beyond the end of the
  // log are dropped (and counted in dropped_marks(): a front-end that sized
  // its log too small has a bug worth seeing).
  void MarkRange(uint64_t gpa, uint64_t len);

  bool IsPageDirty(uint64_t page) const;

  // Fetch-and-clear: exchanges every word with zero and calls `fn(page)` for
  // each page that was dirty, in ascending order. Returns the number of
  // dirty pages.
  template <typename Fn>
  uint64_t Harvest(Fn&& fn);

  // Fetch-and-clear into a bitmap of page_count() bits (one uint64_t per
  // 64 pages), OR-ed into `*bitmap` (resized if shorter).
  uint64_t HarvestInto(std::vector<uint64_t>* bitmap);

  // Count of dirty pages without clearing.
  uint64_t CountDirty() const;

  uint64_t dropped_marks() const {
    return dropped_.load(std::memory_order_relaxed);
  }

 private:
  DirtyLog(UniqueFd fd, uint64_t size, uint64_t offset, void* map_base,
           size_t map_len, uint8_t* bits);
  // The log's size in bytes need not be a multiple of 8, and a log mapped at
  // an offset that is not a multiple of 8 has no aligned words at all: the
  // first word_count_ words are accessed as 64-bit atomics, the rest of the
  // bytes one by one (word_count_ is 0 when the bitmap is misaligned).
  // std::atomic_ref keeps the accesses atomic on plain shared memory.
  std::atomic_ref<uint64_t> Word(uint64_t w) const {
    return std::atomic_ref<uint64_t>(reinterpret_cast<uint64_t*>(bits_)[w]);
  }
  std::atomic_ref<uint8_t> Byte(uint64_t i) const {
    return std::atomic_ref<uint8_t>(bits_[i]);
  }
  void OrByte(uint64_t i, uint8_t mask);

  UniqueFd fd_;
  uint64_t size_;
  uint64_t offset_;
  void* map_base_;
  size_t map_len_;
  uint8_t* bits_;
  uint64_t word_count_;
  std::atomic<uint64_t> dropped_{0};
};

template <typename Fn>
uint64_t DirtyLog::Harvest(Fn&& fn) {
  uint64_t count = 0;
  for (uint64_t w = 0; w < word_count_; ++w) {
    // A relaxed peek skips clean words without taking the cache line for
    // writing; the exchange (acquire) then pairs with the writers' release.
    if (Word(w).load(std::memory_order_relaxed) == 0) continue;
    uint64_t bits = Word(w).exchange(0, std::memory_order_acq_rel);
    while (bits != 0) {
      const int b = __builtin_ctzll(bits);
      bits &= bits - 1;
      fn(w * 64 + b);
      ++count;
    }
  }
  for (uint64_t i = word_count_ * 8; i < size_; ++i) {
    if (Byte(i).load(std::memory_order_relaxed) == 0) continue;
    uint8_t bits = Byte(i).exchange(0, std::memory_order_acq_rel);
    while (bits != 0) {
      const int b = __builtin_ctz(bits);
      bits &= bits - 1;
      fn(i * 8 + b);
      ++count;
    }
  }
  return count;
}

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_MEMORY_DIRTY_LOG_H_
