// Guest memory as seen by a vhost-user back-end (or by the VMM that owns it).
//
// A MemoryRegion is one mmap of a region fd received in SET_MEM_TABLE or
// ADD_MEM_REG. It is described in three address spaces (vhost-user.rst,
// "Memory region description"): guest physical (GPA), the front-end's own
// virtual addresses (used for ring addresses in SET_VRING_ADDR), and the
// offset inside the fd.
//
// GuestMemoryMap is an immutable snapshot of the regions. It is cheap to copy
// (regions are shared) and safe to use from any thread; a region stays mapped
// for as long as any snapshot refers to it, so a ring worker holding a
// snapshot is unaffected when the front-end replaces the table.
//
// Every translation is bounds-checked: a range that is not entirely backed by
// mapped memory is an error, never a wild pointer.
#ifndef VHOSTMIG_VHOST_MEMORY_GUEST_MEMORY_H_
#define VHOSTMIG_VHOST_MEMORY_GUEST_MEMORY_H_

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace vhostmig::vhost {

// Layout of one region, exactly as carried by VhostUserMemoryRegion.
struct MemoryRegionLayout {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;  // front-end virtual address
  uint64_t mmap_offset = 0;     // offset of the region inside its fd
};

// One mapped region. Unmapped when the last reference goes away.
class MemoryRegion {
 public:
  // Maps `memory_size` bytes of `fd` starting at `mmap_offset`, shared and
  // read-write. Fails on a zero size, an overflowing range, or mmap failure.
  static absl::StatusOr<std::shared_ptr<MemoryRegion>> Map(
      UniqueFd fd, const MemoryRegionLayout& layout);

  // Allocates an anonymous shared memfd of `layout.memory_size` bytes and
  // maps it (the VMM side: the synthetic guest and tests own memory this way).
  static absl::StatusOr<std::shared_ptr<MemoryRegion>> CreateMemfd(
      const MemoryRegionLayout& layout, const char* name = "guest-ram");

  ~MemoryRegion();
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;

  const MemoryRegionLayout& layout() const { return layout_; }
  uint64_t gpa() const { return layout_.guest_phys_addr; }
  uint64_t size() const { return layout_.memory_size; }
  uint8_t* host() const { return host_; }
  // The fd backing the region (kept open so it can be passed on, e.g. by a
  // VMM to its back-end).
  int fd() const { return fd_.get(); }

 private:
  MemoryRegion(UniqueFd fd, const MemoryRegionLayout& layout, uint8_t* host,
               void* map_base, size_t map_len);

  UniqueFd fd_;
  MemoryRegionLayout layout_;
  uint8_t* host_;
  void* map_base_;
  size_t map_len_;
};

// An immutable set of non-overlapping regions.
class GuestMemoryMap {
 public:
  GuestMemoryMap() = default;

  // Builds a map; fails if any two regions overlap in GPA or front-end
  // address space.
  static absl::StatusOr<GuestMemoryMap> Create(
      std::vector<std::shared_ptr<MemoryRegion>> regions);

  // A new map with `region` added (ADD_MEM_REG). Fails on overlap.
  absl::StatusOr<GuestMemoryMap> WithRegion(
      std::shared_ptr<MemoryRegion> region) const;
  // A new map without the region matching `layout` in GPA, size and
  // front-end address (REM_MEM_REG). NotFound if there is none.
  absl::StatusOr<GuestMemoryMap> WithoutRegion(
      const MemoryRegionLayout& layout) const;

  const std::vector<std::shared_ptr<MemoryRegion>>& regions() const {
    return regions_;
  }
  bool empty() const { return regions_.empty(); }
  // One past the highest guest physical address covered by any region.
  uint64_t end_gpa() const;

  // Host pointer for [gpa, gpa+len), which must lie inside one region.
  // len == 0 is allowed if gpa is inside a region.
  absl::StatusOr<uint8_t*> Translate(uint64_t gpa, uint64_t len) const;

  // Appends host iovecs covering [gpa, gpa+len) to `out`, splitting at region
  // boundaries; fails if any byte is unbacked. Nothing is appended on error.
  absl::Status TranslateToIovecs(uint64_t gpa, uint64_t len,
                                 std::vector<iovec>* out) const;

  // Converts a front-end virtual address range (as in SET_VRING_ADDR) to the
  // guest physical address of its start; the range must lie in one region.
  absl::StatusOr<uint64_t> FrontendToGuest(uint64_t uaddr, uint64_t len) const;

  // Bulk copies with bounds checks (ranges may span adjacent regions).
  absl::Status Read(uint64_t gpa, void* dst, uint64_t len) const;
  absl::Status Write(uint64_t gpa, const void* src, uint64_t len) const;

 private:
  explicit GuestMemoryMap(std::vector<std::shared_ptr<MemoryRegion>> regions)
      : regions_(std::move(regions)) {}
  const MemoryRegion* FindByGpa(uint64_t gpa) const;

  std::vector<std::shared_ptr<MemoryRegion>> regions_;  // sorted by GPA
};

}  // namespace vhostmig::vhost

#endif  // VHOSTMIG_VHOST_MEMORY_GUEST_MEMORY_H_
