// GuestRam: the synthetic guest's RAM and a guest-physical buffer allocator.
//
// RAM is one or more memfd regions, laid out in guest physical address space
// with a hole (unbacked addresses) between consecutive regions, the way a
// real VM's RAM is split around the PCI hole. Each region's front-end
// address (what SET_MEM_TABLE/SET_VRING_ADDR carry as userspace_addr) is a
// fixed offset from its GPA, so translation code is exercised in both
// address spaces. The regions' fds stay open for handing to a real back-end.
//
// Allocate()/Free() hand out guest-physical buffers for rings, requests and
// replies (first fit over a free list per region; a buffer never spans two
// regions, so one allocation is one descriptor).
//
// Thread-safety: Allocate/Free may be called from any thread.
#ifndef VHOSTMIG_GUEST_GUEST_RAM_H_
#define VHOSTMIG_GUEST_GUEST_RAM_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "vhost/memory/guest_memory.h"

namespace vhostmig::guest {

struct GuestRamOptions {
  // Sizes of the regions, in order of increasing GPA; each a multiple of
  // 4 KiB.
  std::vector<uint64_t> region_sizes = {64ull << 20};
  // GPA of the first region, and unbacked bytes between regions.
  uint64_t base_gpa = 0;
  uint64_t hole_bytes = 1ull << 20;
  // userspace_addr = gpa + frontend_offset.
  uint64_t frontend_offset = 0x7f0000000000ull;
};

class GuestRam {
 public:
  static absl::StatusOr<std::unique_ptr<GuestRam>> Create(
      const GuestRamOptions& options = {});

  const vhost::GuestMemoryMap& memory() const { return memory_; }

  // A buffer of `len` bytes aligned to `align` (a power of two) inside one
  // region. ResourceExhausted when no region has a large enough free range.
  absl::StatusOr<uint64_t> Allocate(uint64_t len, uint64_t align = 64);
  // Reserves exactly [gpa, gpa+len) (as Allocate would return it), for
  // memory whose place is fixed by a layout, e.g. a guest area that must
  // sit in a given region. FailedPrecondition if any byte is in use or
  // unbacked.
  absl::Status AllocateAt(uint64_t gpa, uint64_t len);
  // Returns a buffer from Allocate() or AllocateAt(). Unknown addresses are
  // ignored (and counted, see bad_frees()).
  void Free(uint64_t gpa);

  // Bytes currently allocated (for leak checks in tests).
  uint64_t allocated_bytes() const;
  uint64_t bad_frees() const;

 private:
  GuestRam() = default;

  vhost::GuestMemoryMap memory_;
  mutable absl::Mutex mu_;
  // Free ranges: start gpa -> length, per region (a free range never
  // crosses a region boundary because regions are separated by holes and
  // ranges are created per region).
  std::map<uint64_t, uint64_t> free_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, uint64_t> allocated_ ABSL_GUARDED_BY(mu_);
  uint64_t allocated_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t bad_frees_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace vhostmig::guest

#endif  // VHOSTMIG_GUEST_GUEST_RAM_H_
