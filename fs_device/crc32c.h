// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of each
// device-state frame (docs/state-format.md). Debian's abseil 20220623 has no
// absl/crc, so this is a small table-driven implementation (slicing by 8,
// about 1 GB/s, far above what a state pipe carries).
//
// Pure functions; thread-safe.
#ifndef VHOSTMIG_FS_DEVICE_CRC32C_H_
#define VHOSTMIG_FS_DEVICE_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace vhostmig::fs {

// Extends `crc` (the CRC of the bytes before, 0 to start) over [data, +size).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t Crc32c(const void* data, size_t size) {
  return Crc32cExtend(0, data, size);
}

}  // namespace vhostmig::fs

#endif  // VHOSTMIG_FS_DEVICE_CRC32C_H_
