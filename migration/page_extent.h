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
// Every extent carries a digest (a field, not a flag): CRC-32C of its data
// followed by its header (ExtentDigest). The source computes it while it
// copies each page out of guest RAM (the page is still in cache); the
// destination recomputes it before it believes anything the extent says,
// so page data or a header damaged anywhere between the two coordinators
// (a transport, a proxy, a bit flip in a buffer) fails the migration before
// handover, naming the extent, instead of landing in the guest.
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
  // ExtentDigest of the above, as the source computed it.
  uint32_t crc32c = 0;
};

// CRC-32C of `data`, extended over the header: first_page (8 bytes),
// page_count and flags (4 bytes each), little endian. A zero extent's
// digest covers its header alone.
uint32_t ExtentDigest(const PageExtent& extent);

// Builds extents from guest pages: consecutive pages with the same zero-ness
// (and inside one region) coalesce, up to max_data_pages for data extents.
// Each page's data is added to its extent's digest as it is copied.
class ExtentBuilder {
 public:
  ExtentBuilder(const vhost::GuestMemoryMap* memory, uint32_t flags,
                uint32_t max_data_pages)
      : memory_(memory), flags_(flags), max_data_pages_(max_data_pages) {}

  // Appends page `page` (which must be backed) to the extents.
  absl::Status AddPage(uint64_t page);
  // Extents built so far (the caller may Take them between pages).
  size_t extent_count() const { return extents_.size(); }
  // Bytes of page data in those extents (zero extents cost none).
  uint64_t data_bytes() const { return data_bytes_; }
  // The extents built so far, each with its digest; starts over.
  std::vector<PageExtent> Take();

 private:
  const vhost::GuestMemoryMap* memory_;
  uint32_t flags_;
  uint32_t max_data_pages_;
  // While an extent is built its crc32c field holds the CRC of its data
  // only; Take extends it over the header.
  std::vector<PageExtent> extents_;
  uint64_t data_bytes_ = 0;
};

// Destination side: checks `extent`'s digest first (DataLoss naming the
// extent when it does not match: damaged in transit), then validates it
// (flags, size, against the pages already received, marked in `received`,
// one bit per page; InvalidArgument) and writes it into `memory`.
// `memory` must start zero-filled: a first copy of zero pages is only
// checked and marked, not written (no page is allocated).
absl::Status ApplyExtent(const PageExtent& extent,
                         const vhost::GuestMemoryMap& memory,
                         std::vector<uint64_t>* received);

// True when the 4 KiB at `p` are all zero.
bool IsZeroPage(const uint8_t* p);

}  // namespace vhostmig::migration

#endif  // VHOSTMIG_MIGRATION_PAGE_EXTENT_H_
