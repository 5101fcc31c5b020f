#include "vhost/memory/dirty_log.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/errno_status.h"
#include "vhost/memory/fd_extent.h"

namespace vhostmig::vhost {
namespace {

uint64_t PageSize() {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// Mask of bits [lo, hi] (inclusive, both < 64) of a word.
uint64_t WordMask(unsigned lo, unsigned hi) {
  const uint64_t upto_hi = hi == 63 ? ~uint64_t{0} : (uint64_t{2} << hi) - 1;
  return upto_hi & ~((uint64_t{1} << lo) - 1);
}

}  // namespace

DirtyLog::DirtyLog(UniqueFd fd, uint64_t size, uint64_t offset, void* map_base,
                   size_t map_len, uint8_t* bits)
    : fd_(std::move(fd)),
      size_(size),
      offset_(offset),
      map_base_(map_base),
      map_len_(map_len),
      bits_(bits),
      word_count_(reinterpret_cast<uintptr_t>(bits) % alignof(uint64_t) == 0
                      ? size / 8
                      : 0) {}

DirtyLog::~DirtyLog() {
  if (map_base_ != nullptr) munmap(map_base_, map_len_);
}

absl::StatusOr<std::shared_ptr<DirtyLog>> DirtyLog::Map(UniqueFd fd,
                                                        uint64_t size,
                                                        uint64_t offset) {
  if (!fd.valid()) return absl::InvalidArgumentError("dirty log: invalid fd");
  if (size == 0) return absl::InvalidArgumentError("dirty log: zero size");
  uint64_t ignored;
  if (__builtin_add_overflow(offset, size, &ignored)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "dirty log: offset 0x%x + size 0x%x overflows 64 bits", offset, size));
  }
  if (absl::Status s = CheckFdCovers(fd.get(), offset, size, "dirty log");
      !s.ok()) {
    return s;
  }
  // SET_LOG_BASE's offset need not be page aligned (vhost-user.rst, "Log
  // base address"); map from the page that holds it.
  const uint64_t page = PageSize();
  const uint64_t aligned_offset = offset & ~(page - 1);
  const uint64_t slack = offset - aligned_offset;
  uint64_t map_len;
  if (__builtin_add_overflow(size, slack, &map_len) ||
      map_len > static_cast<uint64_t>(SIZE_MAX) ||
      aligned_offset > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "dirty log: mapping of size 0x%x at 0x%x too large", size, offset));
  }
  void* base = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED,
                    fd.get(), static_cast<off_t>(aligned_offset));
  if (base == MAP_FAILED) {
    return LastErrnoStatus(absl::StrFormat(
        "mmap dirty log (size 0x%x offset 0x%x)", size, offset));
  }
  uint8_t* bits = static_cast<uint8_t*>(base) + slack;
  return std::shared_ptr<DirtyLog>(
      new DirtyLog(std::move(fd), size, offset, base, map_len, bits));
}

absl::StatusOr<std::shared_ptr<DirtyLog>> DirtyLog::Create(uint64_t guest_end) {
  // ceil(guest_end / page) bits, as bytes, rounded up to whole words; at
  // least one word so an empty guest still has a mappable log.
  const uint64_t pages =
      guest_end / kDirtyPageSize + (guest_end % kDirtyPageSize != 0);
  uint64_t bytes = (pages + 7) / 8;
  bytes = std::max<uint64_t>(8, (bytes + 7) & ~uint64_t{7});
  UniqueFd fd(memfd_create("dirty-log", MFD_CLOEXEC));
  if (!fd.valid()) return LastErrnoStatus("memfd_create dirty log");
  if (ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
    return LastErrnoStatus(absl::StrCat("ftruncate dirty log to ", bytes));
  }
  return Map(std::move(fd), bytes, 0);
}

void DirtyLog::OrByte(uint64_t i, uint8_t mask) {
  if (mask == 0) return;
  Byte(i).fetch_or(mask, std::memory_order_release);
}

void DirtyLog::MarkRange(uint64_t gpa, uint64_t len) {
  if (len == 0) return;
  const uint64_t first = gpa / kDirtyPageSize;
  uint64_t last_addr;
  if (__builtin_add_overflow(gpa, len - 1, &last_addr)) last_addr = UINT64_MAX;
  const uint64_t last = last_addr / kDirtyPageSize;
  const uint64_t pages = page_count();
  if (last >= pages) {
    const uint64_t beyond = last - std::max(first, pages) + 1;
    dropped_.fetch_add(beyond, std::memory_order_relaxed);
    if (first >= pages) return;
  }
  const uint64_t end = std::min(last, pages - 1);  // inclusive
  uint64_t p = first;
  while (p <= end) {
    const uint64_t w = p / 64;
    const uint64_t word_last = std::min(end, w * 64 + 63);
    if (w < word_count_) {
      // Always a release RMW, even if the bits look set already: the
      // harvester's acquire exchange must synchronize with *this* writer,
      // or it could copy the page without the data written before the mark.
      Word(w).fetch_or(WordMask(p % 64, word_last % 64),
                       std::memory_order_release);
    } else {
      // Unaligned or trailing bytes: the same bits, a byte at a time.
      for (uint64_t q = p; q <= word_last;) {
        const uint64_t byte = q / 8;
        const uint64_t byte_last = std::min(word_last, byte * 8 + 7);
        const uint8_t mask =
            static_cast<uint8_t>(WordMask(q % 8, byte_last % 8) & 0xff);
        OrByte(byte, mask);
        q = byte_last + 1;
      }
    }
    p = word_last + 1;
  }
}

bool DirtyLog::IsPageDirty(uint64_t page) const {
  if (page >= page_count()) return false;
  return (Byte(page / 8).load(std::memory_order_acquire) >> (page % 8)) & 1;
}

uint64_t DirtyLog::HarvestInto(std::vector<uint64_t>* bitmap) {
  const uint64_t words_needed = (page_count() + 63) / 64;
  if (bitmap->size() < words_needed) bitmap->resize(words_needed, 0);
  uint64_t count = 0;
  for (uint64_t w = 0; w < word_count_; ++w) {
    if (Word(w).load(std::memory_order_relaxed) == 0) continue;
    const uint64_t bits = Word(w).exchange(0, std::memory_order_acq_rel);
    (*bitmap)[w] |= bits;
    count += std::popcount(bits);
  }
  for (uint64_t i = word_count_ * 8; i < size_; ++i) {
    if (Byte(i).load(std::memory_order_relaxed) == 0) continue;
    const uint8_t bits = Byte(i).exchange(0, std::memory_order_acq_rel);
    (*bitmap)[i / 8] |= uint64_t{bits} << (8 * (i % 8));
    count += std::popcount(bits);
  }
  return count;
}

uint64_t DirtyLog::CountDirty() const {
  uint64_t count = 0;
  for (uint64_t w = 0; w < word_count_; ++w) {
    count += std::popcount(Word(w).load(std::memory_order_relaxed));
  }
  for (uint64_t i = word_count_ * 8; i < size_; ++i) {
    count += std::popcount(Byte(i).load(std::memory_order_relaxed));
  }
  return count;
}

}  // namespace vhostmig::vhost
