#include "guest/guest_ram.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_format.h"

namespace vhostmig::guest {

absl::StatusOr<std::unique_ptr<GuestRam>> GuestRam::Create(
    const GuestRamOptions& options) {
  if (options.region_sizes.empty()) {
    return absl::InvalidArgumentError("guest RAM needs at least one region");
  }
  std::unique_ptr<GuestRam> ram(new GuestRam());
  std::vector<std::shared_ptr<vhost::MemoryRegion>> regions;
  uint64_t gpa = options.base_gpa;
  for (size_t i = 0; i < options.region_sizes.size(); ++i) {
    const uint64_t size = options.region_sizes[i];
    if (size == 0 || size % 4096 != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "guest RAM region %d: size 0x%x is not a non-zero multiple of 4 KiB",
          i, size));
    }
    vhost::MemoryRegionLayout layout;
    layout.guest_phys_addr = gpa;
    layout.memory_size = size;
    layout.userspace_addr = gpa + options.frontend_offset;
    layout.mmap_offset = 0;
    auto region = vhost::MemoryRegion::CreateMemfd(layout, "guest-ram");
    if (!region.ok()) return region.status();
    regions.push_back(*std::move(region));
    ram->free_[gpa] = size;
    if (__builtin_add_overflow(gpa, size, &gpa) ||
        __builtin_add_overflow(gpa, options.hole_bytes, &gpa)) {
      return absl::InvalidArgumentError("guest RAM layout overflows 64 bits");
    }
  }
  auto memory = vhost::GuestMemoryMap::Create(std::move(regions));
  if (!memory.ok()) return memory.status();
  ram->memory_ = *std::move(memory);
  return ram;
}

absl::StatusOr<uint64_t> GuestRam::Allocate(uint64_t len, uint64_t align) {
  if (len == 0) len = 1;
  if (align == 0 || (align & (align - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("alignment %d is not a power of two", align));
  }
  absl::MutexLock lock(&mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const uint64_t start = it->first;
    const uint64_t end = start + it->second;
    const uint64_t aligned = (start + align - 1) & ~(align - 1);
    if (aligned < start || aligned > end || end - aligned < len) continue;
    free_.erase(it);
    if (aligned > start) free_[start] = aligned - start;
    if (aligned + len < end) free_[aligned + len] = end - (aligned + len);
    allocated_[aligned] = len;
    allocated_bytes_ += len;
    return aligned;
  }
  return absl::ResourceExhaustedError(absl::StrFormat(
      "guest RAM: no free range of %d bytes (aligned %d); %d bytes in use", len,
      align, allocated_bytes_));
}

absl::Status GuestRam::AllocateAt(uint64_t gpa, uint64_t len) {
  if (len == 0) len = 1;
  absl::MutexLock lock(&mu_);
  auto it = free_.upper_bound(gpa);
  if (it != free_.begin()) {
    --it;
    const uint64_t start = it->first;
    const uint64_t end = start + it->second;
    if (gpa >= start && gpa - start <= it->second && end - gpa >= len) {
      free_.erase(it);
      if (gpa > start) free_[start] = gpa - start;
      if (gpa + len < end) free_[gpa + len] = end - (gpa + len);
      allocated_[gpa] = len;
      allocated_bytes_ += len;
      return absl::OkStatus();
    }
  }
  return absl::FailedPreconditionError(
      absl::StrFormat("guest RAM: [0x%x, +0x%x) is not free", gpa, len));
}

void GuestRam::Free(uint64_t gpa) {
  absl::MutexLock lock(&mu_);
  auto it = allocated_.find(gpa);
  if (it == allocated_.end()) {
    ++bad_frees_;
    return;
  }
  uint64_t start = gpa;
  uint64_t len = it->second;
  allocated_.erase(it);
  allocated_bytes_ -= len;
  // Coalesce with neighbours, but only inside one region: adjacent ranges
  // from two regions (possible when hole_bytes is 0) stay apart so that no
  // allocation spans a region boundary.
  auto in_one_region = [this](uint64_t s, uint64_t l) {
    return memory_.Translate(s, l).ok();
  };
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + len &&
      in_one_region(start, len + next->second)) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start &&
        in_one_region(prev->first, prev->second + len)) {
      prev->second += len;
      return;
    }
  }
  free_[start] = len;
}

uint64_t GuestRam::allocated_bytes() const {
  absl::MutexLock lock(&mu_);
  return allocated_bytes_;
}

uint64_t GuestRam::bad_frees() const {
  absl::MutexLock lock(&mu_);
  return bad_frees_;
}

}  // namespace vhostmig::guest
