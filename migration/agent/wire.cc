#include "migration/agent/wire.h"

#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"

namespace vhostmig::agent {
namespace {

using migration::MigrationMessage;

absl::Status TooMany(const char* what, uint64_t found, uint64_t limit) {
  return absl::InvalidArgumentError(absl::StrCat(
      "transfer frame: ", what, " ", found, " exceeds the limit ", limit));
}

}  // namespace

bool IsMigrationFrame(const pb::TransferFrame& frame) {
  switch (frame.kind_case()) {
    case pb::TransferFrame::kHello:
    case pb::TransferFrame::kPageBatch:
    case pb::TransferFrame::kDeviceStopped:
    case pb::TransferFrame::kStateChunk:
    case pb::TransferFrame::kStateEndTotal:
    case pb::TransferFrame::kReady:
    case pb::TransferFrame::kCommit:
    case pb::TransferFrame::kAbort:
      return true;
    default:
      return false;
  }
}

void EncodeMessage(const MigrationMessage& message, pb::TransferFrame* frame) {
  std::visit(
      [frame](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, migration::Hello>) {
          pb::Hello* h = frame->mutable_hello();
          for (const migration::RegionDescription& r : m.regions) {
            pb::Region* out = h->add_regions();
            out->set_guest_phys_addr(r.guest_phys_addr);
            out->set_memory_size(r.memory_size);
          }
          h->set_features(m.features);
          h->set_device_state(m.device_state);
        } else if constexpr (std::is_same_v<T, migration::PageBatch>) {
          pb::PageBatch* b = frame->mutable_page_batch();
          b->set_round(m.round);
          for (const migration::PageExtent& e : m.extents) {
            pb::PageExtent* out = b->add_extents();
            out->set_first_page(e.first_page);
            out->set_page_count(e.page_count);
            out->set_flags(e.flags);
            out->set_data(e.data);
            out->set_crc32c(e.crc32c);
          }
        } else if constexpr (std::is_same_v<T, migration::DeviceStopped>) {
          pb::DeviceStopped* s = frame->mutable_device_stopped();
          for (const migration::RingDescription& r : m.rings) {
            pb::Ring* out = s->add_rings();
            out->set_index(r.index);
            out->set_size(r.size);
            out->set_flags(r.addr.flags);
            out->set_desc_user_addr(r.addr.desc_user_addr);
            out->set_used_user_addr(r.addr.used_user_addr);
            out->set_avail_user_addr(r.addr.avail_user_addr);
            out->set_log_guest_addr(r.addr.log_guest_addr);
            out->set_base(r.base);
          }
          s->set_guest_state(m.guest_state);
        } else if constexpr (std::is_same_v<T, migration::DeviceStateChunk>) {
          frame->set_state_chunk(m.bytes);
        } else if constexpr (std::is_same_v<T, migration::DeviceStateEnd>) {
          frame->set_state_end_total(m.total_bytes);
          frame->set_state_end_crc32c(m.crc32c);
        } else if constexpr (std::is_same_v<T, migration::Ready>) {
          frame->mutable_ready();
        } else if constexpr (std::is_same_v<T, migration::Commit>) {
          frame->mutable_commit();
        } else if constexpr (std::is_same_v<T, migration::Abort>) {
          frame->mutable_abort()->set_reason(m.reason.substr(
              0, std::min<size_t>(m.reason.size(), kMaxReasonBytes)));
        }
      },
      message);
}

absl::StatusOr<MigrationMessage> DecodeMessage(const pb::TransferFrame& frame) {
  switch (frame.kind_case()) {
    case pb::TransferFrame::kHello: {
      const pb::Hello& h = frame.hello();
      if (h.regions_size() == 0) {
        return absl::InvalidArgumentError(
            "transfer frame: Hello without regions");
      }
      if (h.regions_size() > kMaxRegions) {
        return TooMany("Hello regions", h.regions_size(), kMaxRegions);
      }
      migration::Hello out;
      for (const pb::Region& r : h.regions()) {
        out.regions.push_back({r.guest_phys_addr(), r.memory_size()});
      }
      out.features = h.features();
      out.device_state = h.device_state();
      return MigrationMessage(std::move(out));
    }
    case pb::TransferFrame::kPageBatch: {
      const pb::PageBatch& b = frame.page_batch();
      if (b.extents_size() > kMaxExtentsPerBatch) {
        return TooMany("PageBatch extents", b.extents_size(),
                       kMaxExtentsPerBatch);
      }
      migration::PageBatch out;
      out.round = b.round();
      out.extents.reserve(b.extents_size());
      for (const pb::PageExtent& e : b.extents()) {
        // Sizes are checked against page_count and guest memory by the
        // destination coordinator; here only that nothing is absurd.
        if (e.data().size() > kMaxFrameBytes) {
          return TooMany("PageExtent data bytes", e.data().size(),
                         kMaxFrameBytes);
        }
        // The digest is carried, not checked: the destination coordinator
        // checks it (ApplyExtent), end to end, whatever the transport.
        out.extents.push_back(
            {e.first_page(), e.page_count(), e.flags(), e.data(), e.crc32c()});
      }
      return MigrationMessage(std::move(out));
    }
    case pb::TransferFrame::kDeviceStopped: {
      const pb::DeviceStopped& s = frame.device_stopped();
      if (s.rings_size() > kMaxRings) {
        return TooMany("DeviceStopped rings", s.rings_size(), kMaxRings);
      }
      if (s.guest_state().size() > kMaxGuestStateBytes) {
        return TooMany("DeviceStopped guest_state bytes",
                       s.guest_state().size(), kMaxGuestStateBytes);
      }
      migration::DeviceStopped out;
      for (const pb::Ring& r : s.rings()) {
        if (r.size() == 0 || r.size() > 32768 || r.base() > 0xffff) {
          return absl::InvalidArgumentError(
              absl::StrCat("transfer frame: ring ", r.index(), " has size ",
                           r.size(), " and base ", r.base(),
                           " (expected size 1..32768 and base 0..65535)"));
        }
        migration::RingDescription d;
        d.index = r.index();
        d.size = static_cast<uint16_t>(r.size());
        d.addr.index = r.index();
        d.addr.flags = r.flags();
        d.addr.desc_user_addr = r.desc_user_addr();
        d.addr.used_user_addr = r.used_user_addr();
        d.addr.avail_user_addr = r.avail_user_addr();
        d.addr.log_guest_addr = r.log_guest_addr();
        d.base = static_cast<uint16_t>(r.base());
        out.rings.push_back(d);
      }
      out.guest_state = s.guest_state();
      return MigrationMessage(std::move(out));
    }
    case pb::TransferFrame::kStateChunk:
      if (frame.state_chunk().size() > kMaxStateChunkBytes) {
        return TooMany("state chunk bytes", frame.state_chunk().size(),
                       kMaxStateChunkBytes);
      }
      return MigrationMessage(migration::DeviceStateChunk{frame.state_chunk()});
    case pb::TransferFrame::kStateEndTotal:
      return MigrationMessage(migration::DeviceStateEnd{
          frame.state_end_total(), frame.state_end_crc32c()});
    case pb::TransferFrame::kReady:
      return MigrationMessage(migration::Ready{});
    case pb::TransferFrame::kCommit:
      return MigrationMessage(migration::Commit{});
    case pb::TransferFrame::kAbort:
      if (frame.abort().reason().size() > kMaxReasonBytes) {
        return TooMany("Abort reason bytes", frame.abort().reason().size(),
                       kMaxReasonBytes);
      }
      return MigrationMessage(migration::Abort{frame.abort().reason()});
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("transfer frame: kind ", frame.kind_case(),
                       " does not carry a migration message"));
  }
}

}  // namespace vhostmig::agent
