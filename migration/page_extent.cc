#include "migration/page_extent.h"

#include <cstring>

#include "absl/base/dynamic_annotations.h"
#include "absl/strings/str_cat.h"
#include "base/crc32c.h"
#include "base/status_macros.h"

namespace vhostmig::migration {
namespace {

// Pre-copy reads guest RAM while the guest runs (with the synthetic guest,
// a vCPU thread of this very process writes it meanwhile). That race is the
// design, not a bug: a page written during its copy is dirty again and sent
// again, and the last round runs with the guest stopped (DESIGN.md,
// "Migration, source side"), as a hypervisor reads a running VM's memory.
// ThreadSanitizer cannot know that, so these reads, and only these, are
// hidden from it (the annotations are empty without -fsanitize=thread).
class RacyGuestRamReads {
 public:
  RacyGuestRamReads() { ABSL_ANNOTATE_IGNORE_READS_BEGIN(); }
  ~RacyGuestRamReads() { ABSL_ANNOTATE_IGNORE_READS_END(); }
  RacyGuestRamReads(const RacyGuestRamReads&) = delete;
  RacyGuestRamReads& operator=(const RacyGuestRamReads&) = delete;
};

bool IsZeroGuestPage(const uint8_t* p) {
  const RacyGuestRamReads racy;
  return IsZeroPage(p);
}

// Copies the page at `host` to the end of `e`'s data and adds it to the
// data CRC kept in e->crc32c while the extent is built. The CRC is taken
// of the copy, not of guest RAM, which the guest may change meanwhile.
void AppendPage(const uint8_t* host, PageExtent* e) {
  {
    const RacyGuestRamReads racy;
    e->data.append(reinterpret_cast<const char*>(host), kPageSize);
  }
  e->crc32c = Crc32cExtend(
      e->crc32c, e->data.data() + e->data.size() - kPageSize, kPageSize);
}

// Extends the CRC of an extent's data over its header (ExtentDigest).
uint32_t SealDigest(uint32_t data_crc, const PageExtent& e) {
  uint8_t header[16];
  for (int i = 0; i < 8; ++i) {
    header[i] = static_cast<uint8_t>(e.first_page >> (8 * i));
  }
  for (int i = 0; i < 4; ++i) {
    header[8 + i] = static_cast<uint8_t>(e.page_count >> (8 * i));
    header[12 + i] = static_cast<uint8_t>(e.flags >> (8 * i));
  }
  return Crc32cExtend(data_crc, header, sizeof(header));
}

}  // namespace

uint32_t ExtentDigest(const PageExtent& e) {
  return SealDigest(Crc32c(e.data.data(), e.data.size()), e);
}

bool IsZeroPage(const uint8_t* p) {
  uint64_t acc = 0;
  for (size_t i = 0; i < kPageSize; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, sizeof(w));
    acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    if (acc != 0) return false;
  }
  return true;
}

absl::Status ExtentBuilder::AddPage(uint64_t page) {
  ASSIGN_OR_RETURN(uint8_t * host,
                   memory_->Translate(page * kPageSize, kPageSize));
  const bool zero = IsZeroGuestPage(host);
  const uint32_t flags = flags_ | (zero ? kZero : 0u);
  if (!extents_.empty()) {
    PageExtent& last = extents_.back();
    const bool adjacent = last.first_page + last.page_count == page &&
                          memory_
                              ->Translate(last.first_page * kPageSize,
                                          (last.page_count + 1) * kPageSize)
                              .ok();
    if (adjacent && last.flags == flags &&
        (zero || last.page_count < max_data_pages_)) {
      ++last.page_count;
      if (!zero) {
        AppendPage(host, &last);
        data_bytes_ += kPageSize;
      }
      return absl::OkStatus();
    }
  }
  PageExtent e;
  e.first_page = page;
  e.page_count = 1;
  e.flags = flags;
  if (!zero) {
    e.data.reserve(kPageSize);
    AppendPage(host, &e);
    data_bytes_ += kPageSize;
  }
  extents_.push_back(std::move(e));
  return absl::OkStatus();
}

std::vector<PageExtent> ExtentBuilder::Take() {
  std::vector<PageExtent> out;
  out.swap(extents_);
  for (PageExtent& e : out) e.crc32c = SealDigest(e.crc32c, e);
  data_bytes_ = 0;
  return out;
}

absl::Status ApplyExtent(const PageExtent& e,
                         const vhost::GuestMemoryMap& memory,
                         std::vector<uint64_t>* received) {
  // First: nothing an extent says is believed before it is known to be
  // what the source sent.
  if (const uint32_t digest = ExtentDigest(e); digest != e.crc32c) {
    return absl::DataLossError(absl::StrCat(
        "page extent at page ", e.first_page, " (", e.page_count,
        " pages, flags 0x", absl::Hex(e.flags), ", ", e.data.size(),
        " data bytes) was damaged in transit: its CRC-32C is 0x",
        absl::Hex(digest, absl::kZeroPad8), ", the source's 0x",
        absl::Hex(e.crc32c, absl::kZeroPad8)));
  }
  if ((e.flags & ~kKnownPageFlags) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page extent at page ", e.first_page, ": unknown flags 0x",
                     absl::Hex(e.flags & ~kKnownPageFlags)));
  }
  if (e.page_count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page extent at page ", e.first_page, " is empty"));
  }
  const uint64_t expected_data =
      (e.flags & kZero) ? 0 : uint64_t{e.page_count} * kPageSize;
  if (e.data.size() != expected_data) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page extent at page ", e.first_page, " (", e.page_count,
        " pages, flags 0x", absl::Hex(e.flags), "): ", e.data.size(),
        " data bytes, expected ", expected_data));
  }
  if (e.first_page > (UINT64_MAX / kPageSize) - e.page_count) {
    return absl::InvalidArgumentError("page extent overflows guest addresses");
  }
  const bool resend = (e.flags & kDirtySinceLastRound) != 0;
  const uint64_t end = e.first_page + e.page_count;
  if (received->size() * 64 < end) received->resize((end + 63) / 64, 0);
  for (uint64_t p = e.first_page; p < end; ++p) {
    const bool had = ((*received)[p / 64] >> (p % 64)) & 1;
    if (had != resend) {
      return absl::InvalidArgumentError(
          absl::StrCat("page ", p, ": ",
                       resend ? "resent (kDirtySinceLastRound) but never sent"
                              : "sent as a first copy but already received"));
    }
  }
  // Ranges may span adjacent regions; Write checks that every byte is backed.
  const uint64_t gpa = e.first_page * kPageSize;
  const uint64_t len = uint64_t{e.page_count} * kPageSize;
  if ((e.flags & kZero) && !resend) {
    // A first copy of zero pages: incoming memory starts zero-filled
    // (DestinationVmm::memory), so there is nothing to write. Writing would
    // allocate every page of a fresh memfd, which for a mostly empty guest
    // is most of the migration's work on this side (and, since a zero
    // extent costs the flow-control window nothing, work the source cannot
    // see: the destination fell behind by seconds per GiB).
    // Bounds still hold: Translate checks every page is backed.
    for (uint64_t off = 0; off < len; off += kPageSize) {
      RETURN_IF_ERROR(memory.Translate(gpa + off, kPageSize).status());
    }
  } else if (e.flags & kZero) {
    for (uint64_t off = 0; off < len; off += kPageSize) {
      ASSIGN_OR_RETURN(uint8_t * host, memory.Translate(gpa + off, kPageSize));
      std::memset(host, 0, kPageSize);
    }
  } else {
    RETURN_IF_ERROR(memory.Write(gpa, e.data.data(), len));
  }
  for (uint64_t p = e.first_page; p < end; ++p) {
    (*received)[p / 64] |= uint64_t{1} << (p % 64);
  }
  return absl::OkStatus();
}

}  // namespace vhostmig::migration
