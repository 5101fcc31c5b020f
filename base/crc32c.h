// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of
// each device-state frame (docs/state-format.md) and the digest of each
// migration page extent (migration/page_extent.h). Debian's abseil 20220623
// has no absl/crc, so this is a small implementation: the SSE4.2 `crc32`
// instruction where the CPU has it (chosen once, at the first call), a
// table-driven one (slicing by 8) elsewhere. Both give the same values;
// docs/migration.md has what each costs per 4 KiB page.
//
// Pure functions; thread-safe.
#ifndef VHOSTMIG_BASE_CRC32C_H_
#define VHOSTMIG_BASE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace vhostmig {

// Extends `crc` (the CRC of the bytes before, 0 to start) over [data, +size).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t Crc32c(const void* data, size_t size) {
  return Crc32cExtend(0, data, size);
}

// The two implementations behind Crc32cExtend, for tests and measurements.
namespace crc32c_internal {
uint32_t ExtendPortable(uint32_t crc, const void* data, size_t size);
// True when the CPU has SSE4.2 (ExtendHardware may be called).
bool HardwareAvailable();
uint32_t ExtendHardware(uint32_t crc, const void* data, size_t size);
}  // namespace crc32c_internal

}  // namespace vhostmig

#endif  // VHOSTMIG_BASE_CRC32C_H_
