#include "vhost/protocol/message.h"

#include "absl/strings/str_cat.h"

namespace vhostmig::vhost {

std::vector<uint8_t> EncodeMemoryTable(
    absl::Span<const VhostUserMemoryRegion> regions) {
  VhostUserMemoryHeader header;
  header.num_regions = static_cast<uint32_t>(regions.size());
  std::vector<uint8_t> out(sizeof(header) +
                           regions.size() * sizeof(VhostUserMemoryRegion));
  std::memcpy(out.data(), &header, sizeof(header));
  if (!regions.empty()) {
    std::memcpy(out.data() + sizeof(header), regions.data(),
                regions.size() * sizeof(VhostUserMemoryRegion));
  }
  return out;
}

absl::Status CheckMemoryRegion(const Message& m,
                               const VhostUserMemoryRegion& r) {
  if (r.memory_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.name(), ": region at guest address 0x",
                     absl::Hex(r.guest_phys_addr), " has size 0"));
  }
  const uint64_t last = r.memory_size - 1;
  if (r.guest_phys_addr + last < r.guest_phys_addr ||
      r.userspace_addr + last < r.userspace_addr ||
      r.mmap_offset + last < r.mmap_offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        m.name(), ": region at guest address 0x", absl::Hex(r.guest_phys_addr),
        " of size 0x", absl::Hex(r.memory_size), " wraps around"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<VhostUserMemoryRegion>> DecodeMemoryTable(
    const Message& m) {
  if (m.payload.size() < sizeof(VhostUserMemoryHeader)) {
    return absl::InvalidArgumentError(absl::StrCat(
        m.name(), ": payload is ", m.payload.size(),
        " bytes, expected at least ", sizeof(VhostUserMemoryHeader)));
  }
  VhostUserMemoryHeader header;
  std::memcpy(&header, m.payload.data(), sizeof(header));
  if (header.num_regions > kMaxMemoryRegions) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.name(), ": ", header.num_regions, " regions, at most ",
                     kMaxMemoryRegions, " allowed"));
  }
  if (header.padding != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        m.name(), ": padding is ", header.padding, ", expected 0"));
  }
  const size_t expected =
      sizeof(header) + header.num_regions * sizeof(VhostUserMemoryRegion);
  if (m.payload.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        m.name(), ": payload is ", m.payload.size(), " bytes, expected ",
        expected, " for ", header.num_regions, " regions"));
  }
  std::vector<VhostUserMemoryRegion> regions(header.num_regions);
  if (!regions.empty()) {
    std::memcpy(regions.data(), m.payload.data() + sizeof(header),
                regions.size() * sizeof(VhostUserMemoryRegion));
  }
  for (const VhostUserMemoryRegion& r : regions) {
    absl::Status s = CheckMemoryRegion(m, r);
    if (!s.ok()) return s;
  }
  return regions;
}

absl::StatusOr<std::vector<uint8_t>> EncodeConfig(const ConfigAccess& access) {
  if (access.data.size() > kMaxConfigSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("config access of ", access.data.size(),
                     " bytes, at most ", kMaxConfigSize, " allowed"));
  }
  VhostUserConfigHeader header;
  header.offset = access.offset;
  header.size = static_cast<uint32_t>(access.data.size());
  header.flags = access.flags;
  std::vector<uint8_t> out(sizeof(header) + access.data.size());
  std::memcpy(out.data(), &header, sizeof(header));
  if (!access.data.empty()) {
    std::memcpy(out.data() + sizeof(header), access.data.data(),
                access.data.size());
  }
  return out;
}

absl::StatusOr<ConfigAccess> DecodeConfig(const Message& m) {
  if (m.payload.size() < sizeof(VhostUserConfigHeader)) {
    return absl::InvalidArgumentError(absl::StrCat(
        m.name(), ": payload is ", m.payload.size(),
        " bytes, expected at least ", sizeof(VhostUserConfigHeader)));
  }
  VhostUserConfigHeader header;
  std::memcpy(&header, m.payload.data(), sizeof(header));
  if (header.size > kMaxConfigSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(m.name(), ": config size is ", header.size, ", at most ",
                     kMaxConfigSize, " allowed"));
  }
  const size_t expected = sizeof(header) + header.size;
  if (m.payload.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        m.name(), ": payload is ", m.payload.size(), " bytes, expected ",
        expected, " for a config access of ", header.size, " bytes"));
  }
  ConfigAccess access;
  access.offset = header.offset;
  access.flags = header.flags;
  access.data.assign(m.payload.begin() + sizeof(header), m.payload.end());
  return access;
}

}  // namespace vhostmig::vhost
