// The Transfer stream's PageBatch frames carry each page extent's digest
// (proto/agent.proto PageExtent.crc32c), so page data damaged anywhere
// between the agents is caught by the destination coordinator: the decoder
// carries the digest, ApplyExtent checks it.
#include "migration/agent/wire.h"

#include <string>
#include <variant>
#include <vector>

#include "gtest/gtest.h"
#include "migration/page_extent.h"
#include "vhost/memory/guest_memory.h"

namespace vhostmig::agent {
namespace {

using migration::kPageSize;
using migration::PageBatch;
using migration::PageExtent;

TEST(WireTest, PageExtentDigestTravelsAndExposesDamageOnTheWire) {
  PageExtent sent{5, 2, 0, std::string(2 * kPageSize, 'z')};
  sent.data[kPageSize] = 'y';
  sent.crc32c = migration::ExtentDigest(sent);
  pb::TransferFrame frame;
  EncodeMessage(PageBatch{3, {sent}}, &frame);
  ASSERT_EQ(frame.page_batch().extents_size(), 1);
  EXPECT_EQ(frame.page_batch().extents(0).crc32c(), sent.crc32c);

  // Intact: the decoded extent is the one sent, digest included.
  absl::StatusOr<migration::MigrationMessage> m = DecodeMessage(frame);
  ASSERT_TRUE(m.ok()) << m.status();
  const PageExtent& got = std::get<PageBatch>(*m).extents.at(0);
  EXPECT_EQ(got.crc32c, sent.crc32c);
  EXPECT_EQ(migration::ExtentDigest(got), got.crc32c);

  // One byte of page data flipped in the serialized frame, as a broken
  // link or proxy would: the frame still decodes (the wire only bounds
  // sizes), and the destination refuses the extent.
  std::string bytes = frame.SerializeAsString();
  const size_t at = bytes.find("zzy");
  ASSERT_NE(at, std::string::npos);
  bytes[at + 2] ^= 0x01;
  pb::TransferFrame damaged;
  ASSERT_TRUE(damaged.ParseFromString(bytes));
  absl::StatusOr<migration::MigrationMessage> d = DecodeMessage(damaged);
  ASSERT_TRUE(d.ok()) << d.status();
  const PageExtent& bad = std::get<PageBatch>(*d).extents.at(0);
  EXPECT_NE(migration::ExtentDigest(bad), bad.crc32c);

  auto region =
      vhost::MemoryRegion::CreateMemfd({0, 8 * kPageSize, 0x7f0000000000, 0});
  ASSERT_TRUE(region.ok()) << region.status();
  auto memory = vhost::GuestMemoryMap::Create({*region});
  ASSERT_TRUE(memory.ok()) << memory.status();
  std::vector<uint64_t> received;
  const absl::Status s = migration::ApplyExtent(bad, *memory, &received);
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_NE(s.message().find("page extent at page 5"), std::string::npos) << s;
  EXPECT_TRUE(migration::ApplyExtent(got, *memory, &received).ok());
}

TEST(WireTest, DeviceStateEndCarriesTheStreamDigest) {
  pb::TransferFrame frame;
  EncodeMessage(migration::DeviceStateEnd{195, 0x72a510cfu}, &frame);
  absl::StatusOr<migration::MigrationMessage> m = DecodeMessage(frame);
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& end = std::get<migration::DeviceStateEnd>(*m);
  EXPECT_EQ(end.total_bytes, 195u);
  EXPECT_EQ(end.crc32c, 0x72a510cfu);
}

}  // namespace
}  // namespace vhostmig::agent
