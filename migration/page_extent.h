// PageExtent: a run of guest pages as it travels from the migration source
// to the destination, with status flags that say what the run is.
//
// Each flag has exactly one meaning (docs/migration.md has the table of
// combinations):
//
//   kZero                 the pages read as zeroes; `data` is empty. A zero
//                         page costs a flag, not 4 KiB.
//   kDirtySinceLastRound  the pages were sent before and written since (by
//                         the guest or by the back-end, per the dirty log);
//                         this copy replaces the earlier one. Without it the
//                         extent is the first copy of these pages.
//
// The destination checks both claims: a first copy of a page it already
// has, or a resend of a page it never got, is a protocol error (a source
// that lost track of its rounds), not something to paper over.
//
// Thread-safety: plain values.
#ifndef VHOSTMIG_MIGRATION_PAGE_EXTENT_H_
#define VHOSTMIG_MIGRATION_PAGE_EXTENT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "vhost/memory/dirty_log.h"
#include "vhost/memory/guest_memory.h"

namespace vhostmig::migration {

inline constexpr uint64_t kPageSize = vhost::kDirtyPageSize;

enum PageFlag : uint32_t {
  kZero = 1u << 0,
  kDirtySinceLastRound = 1u << 1,
};
inline constexpr uint32_t kKnownPageFlags = kZero | kDirtySinceLastRound;

struct PageExtent {
  uint64_t first_page = 0;  // guest physical address / kPageSize
  uint32_t page_count = 0;
  uint32_t flags = 0;
  // page_count * kPageSize bytes, or empty with kZero.
  std::string data;
};

// Builds extents from guest pages: consecutive pages with the same zero-ness
// (and inside one region) coalesce, up to max_data_pages for data extents.
class ExtentBuilder {
 public:
  ExtentBuilder(const vhost::GuestMemoryMap* memory, uint32_t flags,
                uint32_t max_data_pages)
      : memory_(memory), flags_(flags), max_data_pages_(max_data_pages) {}

  // Appends page `page` (which must be backed) to the extents.
  absl::Status AddPage(uint64_t page);
  // Extents built so far (the caller may take them between pages).
  std::vector<PageExtent>& extents() { return extents_; }
  // Bytes of page data in extents() (zero extents cost none).
  uint64_t data_bytes() const { return data_bytes_; }
  std::vector<PageExtent> Take();

 private:
  const vhost::GuestMemoryMap* memory_;
  uint32_t flags_;
  uint32_t max_data_pages_;
  std::vector<PageExtent> extents_;
  uint64_t data_bytes_ = 0;
};

// Destination side: validates `extent` (flags, size, against the pages
// already received, marked in `received`, one bit per page) and writes it
// into `memory`. `memory` must start zero-filled: a first copy of zero
// pages is only checked and marked, not written (no page is allocated).
absl::Status ApplyExtent(const PageExtent& extent,
                         const vhost::GuestMemoryMap& memory,
                         std::vector<uint64_t>* received);

// True when the 4 KiB at `p` are all zero.
bool IsZeroPage(const uint8_t* p);

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_PAGE_EXTENT_H_
