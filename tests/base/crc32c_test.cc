// CRC-32C: the standard check value, extension in pieces, and the SSE4.2
// path giving the table's values for every length and alignment.
#include "base/crc32c.h"

#include <cstdint>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace vhostmig {
namespace {

using crc32c_internal::ExtendHardware;
using crc32c_internal::ExtendPortable;
using crc32c_internal::HardwareAvailable;

TEST(Crc32cTest, MatchesTheStandardCheckValue) {
  // RFC 3720 B.4 / the CRC catalogue's check value for CRC-32C.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(Crc32c("", 0), 0u);
  EXPECT_EQ(ExtendPortable(0, "123456789", 9), 0xE3069283u);
  // Extending in pieces equals one pass (the 8-byte loop and the tail).
  const std::string s = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(Crc32cExtend(Crc32c(s.data(), 13), s.data() + 13, s.size() - 13),
            Crc32c(s.data(), s.size()));
}

TEST(Crc32cTest, HardwarePathAgreesWithTheTableForEveryLengthAndAlignment) {
  if (!HardwareAvailable()) GTEST_SKIP() << "this CPU has no SSE4.2";
  EXPECT_EQ(ExtendHardware(0, "123456789", 9), 0xE3069283u);
  std::mt19937 rng(42);
  std::string buf(4096 + 64, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t len : {0, 1, 7, 8, 9, 63, 64, 65, 4095, 4096}) {
      const uint32_t seed = static_cast<uint32_t>(rng());
      EXPECT_EQ(ExtendHardware(seed, buf.data() + offset, len),
                ExtendPortable(seed, buf.data() + offset, len))
          << "offset " << offset << " length " << len;
    }
  }
}

}  // namespace
}  // namespace vhostmig
