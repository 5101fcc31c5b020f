#include "vhost/memory/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

std::string Describe(const MemoryRegionLayout& l) {
  return absl::StrFormat("gpa 0x%x size 0x%x uaddr 0x%x offset 0x%x",
                         l.guest_phys_addr, l.memory_size, l.userspace_addr,
                         l.mmap_offset);
}

// Whether [a, a+alen) and [b, b+blen) intersect; both ranges are known not to
// overflow.
bool Overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

// Calls `fn(host, gpa, chunk_len)` for each piece of [gpa, gpa+len) inside
// one region. Fails, before calling `fn` at all, if any byte is unbacked.
template <typename Fn>
absl::Status ForEachChunk(const GuestMemoryMap& map, uint64_t gpa, uint64_t len,
                          Fn&& fn) {
  uint64_t end;
  if (__builtin_add_overflow(gpa, len, &end)) {
    return absl::OutOfRangeError(
        absl::StrFormat("guest range 0x%x+0x%x overflows 64 bits", gpa, len));
  }
  // First pass validates, second pass acts, so that a failure has no
  // partial effect.
  for (int pass = 0; pass < 2; ++pass) {
    uint64_t cur = gpa;
    while (cur < end) {
      // Regions are few; a linear scan keeps this independent of the map's
      // private index.
      const MemoryRegion* region = nullptr;
      for (const auto& r : map.regions()) {
        if (cur >= r->gpa() && cur - r->gpa() < r->size()) {
          region = r.get();
          break;
        }
      }
      if (region == nullptr) {
        return absl::OutOfRangeError(absl::StrFormat(
            "guest range 0x%x+0x%x: address 0x%x is not backed by guest "
            "memory",
            gpa, len, cur));
      }
      const uint64_t region_end = region->gpa() + region->size();
      uint8_t* host = region->host() + (cur - region->gpa());
      const uint64_t chunk = std::min(end, region_end) - cur;
      if (pass == 1) fn(host, cur, chunk);
      cur += chunk;
    }
  }
  return absl::OkStatus();
}

}  // namespace

MemoryRegion::MemoryRegion(UniqueFd fd, const MemoryRegionLayout& layout,
                           uint8_t* host, void* map_base, size_t map_len)
    : fd_(std::move(fd)),
      layout_(layout),
      host_(host),
      map_base_(map_base),
      map_len_(map_len) {}

MemoryRegion::~MemoryRegion() {
  if (map_base_ != nullptr) munmap(map_base_, map_len_);
}

absl::StatusOr<std::shared_ptr<MemoryRegion>> MemoryRegion::Map(
    UniqueFd fd, const MemoryRegionLayout& layout) {
  if (!fd.valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory region (", Describe(layout), "): invalid fd"));
  }
  if (layout.memory_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("memory region (", Describe(layout), "): zero size"));
  }
  uint64_t ignored;
  if (__builtin_add_overflow(layout.guest_phys_addr, layout.memory_size,
                             &ignored) ||
      __builtin_add_overflow(layout.userspace_addr, layout.memory_size,
                             &ignored) ||
      __builtin_add_overflow(layout.mmap_offset, layout.memory_size,
                             &ignored)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory region (", Describe(layout), "): range overflows 64 bits"));
  }
  if (absl::Status s =
          CheckFdCovers(fd.get(), layout.mmap_offset, layout.memory_size,
                        absl::StrCat("memory region (", Describe(layout), ")"));
      !s.ok()) {
    return s;
  }
  // mmap wants a page-aligned offset; map from the page holding mmap_offset
  // and point past the slack.
  const uint64_t page = PageSize();
  const uint64_t aligned_offset = layout.mmap_offset & ~(page - 1);
  const uint64_t slack = layout.mmap_offset - aligned_offset;
  uint64_t map_len;
  if (__builtin_add_overflow(layout.memory_size, slack, &map_len) ||
      map_len > static_cast<uint64_t>(SIZE_MAX) ||
      aligned_offset > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory region (", Describe(layout), "): mapping too large"));
  }
  void* base =
      mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
           fd.get(), static_cast<off_t>(aligned_offset));
  if (base == MAP_FAILED) {
    return LastErrnoStatus(
        absl::StrCat("mmap memory region (", Describe(layout), ")"));
  }
  uint8_t* host = static_cast<uint8_t*>(base) + slack;
  return std::shared_ptr<MemoryRegion>(
      new MemoryRegion(std::move(fd), layout, host, base, map_len));
}

absl::StatusOr<std::shared_ptr<MemoryRegion>> MemoryRegion::CreateMemfd(
    const MemoryRegionLayout& layout, const char* name) {
  uint64_t file_size;
  if (__builtin_add_overflow(layout.mmap_offset, layout.memory_size,
                             &file_size) ||
      file_size > static_cast<uint64_t>(INT64_MAX)) {
    return absl::InvalidArgumentError(
        absl::StrCat("memfd region (", Describe(layout), "): size overflows"));
  }
  UniqueFd fd(memfd_create(name, MFD_CLOEXEC));
  if (!fd.valid()) return LastErrnoStatus("memfd_create");
  if (ftruncate(fd.get(), static_cast<off_t>(file_size)) != 0) {
    return LastErrnoStatus(absl::StrCat("ftruncate memfd to ", file_size));
  }
  return Map(std::move(fd), layout);
}

absl::StatusOr<GuestMemoryMap> GuestMemoryMap::Create(
    std::vector<std::shared_ptr<MemoryRegion>> regions) {
  for (const auto& r : regions) {
    if (r == nullptr) return absl::InvalidArgumentError("null memory region");
  }
  std::sort(regions.begin(), regions.end(),
            [](const auto& a, const auto& b) { return a->gpa() < b->gpa(); });
  for (size_t i = 0; i < regions.size(); ++i) {
    for (size_t j = i + 1; j < regions.size(); ++j) {
      const MemoryRegionLayout& a = regions[i]->layout();
      const MemoryRegionLayout& b = regions[j]->layout();
      if (Overlaps(a.guest_phys_addr, a.memory_size, b.guest_phys_addr,
                   b.memory_size)) {
        return absl::InvalidArgumentError(
            absl::StrCat("memory regions overlap in guest physical space: (",
                         Describe(a), ") and (", Describe(b), ")"));
      }
      if (Overlaps(a.userspace_addr, a.memory_size, b.userspace_addr,
                   b.memory_size)) {
        return absl::InvalidArgumentError(
            absl::StrCat("memory regions overlap in front-end address space: (",
                         Describe(a), ") and (", Describe(b), ")"));
      }
    }
  }
  return GuestMemoryMap(std::move(regions));
}

absl::StatusOr<GuestMemoryMap> GuestMemoryMap::WithRegion(
    std::shared_ptr<MemoryRegion> region) const {
  std::vector<std::shared_ptr<MemoryRegion>> regions = regions_;
  regions.push_back(std::move(region));
  return Create(std::move(regions));
}

absl::StatusOr<GuestMemoryMap> GuestMemoryMap::WithoutRegion(
    const MemoryRegionLayout& layout) const {
  std::vector<std::shared_ptr<MemoryRegion>> regions;
  bool found = false;
  for (const auto& r : regions_) {
    const MemoryRegionLayout& l = r->layout();
    if (!found && l.guest_phys_addr == layout.guest_phys_addr &&
        l.memory_size == layout.memory_size &&
        l.userspace_addr == layout.userspace_addr) {
      found = true;
      continue;
    }
    regions.push_back(r);
  }
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat("no memory region matches (", Describe(layout), ")"));
  }
  return GuestMemoryMap(std::move(regions));
}

uint64_t GuestMemoryMap::end_gpa() const {
  uint64_t end = 0;
  for (const auto& r : regions_) end = std::max(end, r->gpa() + r->size());
  return end;
}

const MemoryRegion* GuestMemoryMap::FindByGpa(uint64_t gpa) const {
  // Last region starting at or below gpa.
  auto it = std::upper_bound(
      regions_.begin(), regions_.end(), gpa,
      [](uint64_t addr, const auto& r) { return addr < r->gpa(); });
  if (it == regions_.begin()) return nullptr;
  const MemoryRegion* r = std::prev(it)->get();
  if (gpa - r->gpa() >= r->size()) return nullptr;
  return r;
}

absl::StatusOr<uint8_t*> GuestMemoryMap::Translate(uint64_t gpa,
                                                   uint64_t len) const {
  const MemoryRegion* r = FindByGpa(gpa);
  if (r == nullptr) {
    return absl::OutOfRangeError(absl::StrFormat(
        "guest address 0x%x is not backed by guest memory", gpa));
  }
  const uint64_t offset = gpa - r->gpa();
  // offset < size, so size - offset cannot underflow; comparing lengths
  // avoids computing gpa + len, which may overflow.
  if (len > r->size() - offset) {
    return absl::OutOfRangeError(absl::StrFormat(
        "guest range 0x%x+0x%x exceeds its memory region (gpa 0x%x size 0x%x)",
        gpa, len, r->gpa(), r->size()));
  }
  return r->host() + offset;
}

absl::Status GuestMemoryMap::TranslateToIovecs(uint64_t gpa, uint64_t len,
                                               std::vector<iovec>* out) const {
  return ForEachChunk(*this, gpa, len,
                      [out](uint8_t* host, uint64_t, uint64_t chunk) {
                        out->push_back(iovec{host, chunk});
                      });
}

absl::StatusOr<uint64_t> GuestMemoryMap::FrontendToGuest(uint64_t uaddr,
                                                         uint64_t len) const {
  for (const auto& r : regions_) {
    const MemoryRegionLayout& l = r->layout();
    if (uaddr >= l.userspace_addr && uaddr - l.userspace_addr < l.memory_size) {
      const uint64_t offset = uaddr - l.userspace_addr;
      if (len > l.memory_size - offset) {
        return absl::OutOfRangeError(absl::StrFormat(
            "front-end range 0x%x+0x%x exceeds its memory region (uaddr 0x%x "
            "size 0x%x)",
            uaddr, len, l.userspace_addr, l.memory_size));
      }
      return l.guest_phys_addr + offset;
    }
  }
  return absl::OutOfRangeError(absl::StrFormat(
      "front-end address 0x%x is not in any memory region", uaddr));
}

absl::Status GuestMemoryMap::Read(uint64_t gpa, void* dst, uint64_t len) const {
  uint8_t* out = static_cast<uint8_t*>(dst);
  return ForEachChunk(*this, gpa, len,
                      [&out](uint8_t* host, uint64_t, uint64_t chunk) {
                        std::memcpy(out, host, chunk);
                        out += chunk;
                      });
}

absl::Status GuestMemoryMap::Write(uint64_t gpa, const void* src,
                                   uint64_t len) const {
  const uint8_t* in = static_cast<const uint8_t*>(src);
  return ForEachChunk(*this, gpa, len,
                      [&in](uint8_t* host, uint64_t, uint64_t chunk) {
                        std::memcpy(host, in, chunk);
                        in += chunk;
                      });
}

}  // namespace vhostmig::vhost
