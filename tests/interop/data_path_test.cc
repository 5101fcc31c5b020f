// The data path against the real peers: our front-end shares guest RAM
// (SET_MEM_TABLE with front-end addresses as GuestRam defines them), hands
// over the hiprio and one request ring with eventfd notifiers, and the
// synthetic guest's virtio-fs driver speaks FUSE through them
// (virtio 1.2, 5.11). Replies are checked against the shared directory.
#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "tests/interop/interop_fixture.h"

namespace vhostmig::interop {
namespace {

class DataPathTest : public PeerTest {};

TEST_P(DataPathTest, InitLookupGetattrOpenReadThroughRealRings) {
  const std::string contents = Pattern(10000);
  WriteSharedFile("hello.txt", contents);
  ASSERT_OK_AND_ASSIGN(auto peer, StartPeer("fs"));
  ASSERT_OK_AND_ASSIGN(AttachedGuest g, AttachGuest(peer->socket_path()));
  guest::VirtioFsDriver& d = *g.driver;

  ASSERT_OK_AND_ASSIGN(fuse_init_out init, d.Init());
  EXPECT_EQ(init.major, FUSE_KERNEL_VERSION);
  EXPECT_GT(init.max_write, 0u);

  ASSERT_OK_AND_ASSIGN(fuse_entry_out entry,
                       d.Lookup(FUSE_ROOT_ID, "hello.txt"));
  EXPECT_NE(entry.nodeid, 0u);
  EXPECT_NE(entry.nodeid, FUSE_ROOT_ID);
  EXPECT_EQ(entry.attr.size, contents.size());
  EXPECT_TRUE(S_ISREG(entry.attr.mode)) << std::oct << entry.attr.mode;

  ASSERT_OK_AND_ASSIGN(fuse_attr_out attr, d.Getattr(entry.nodeid));
  EXPECT_EQ(attr.attr.size, contents.size());
  EXPECT_EQ(attr.attr.ino, entry.attr.ino);

  ASSERT_OK_AND_ASSIGN(fuse_open_out open, d.Open(entry.nodeid, O_RDONLY));
  // Into driver-owned reply space (the data follows the out header)...
  std::vector<uint8_t> buf(16384);
  ASSERT_OK_AND_ASSIGN(size_t n,
                       d.Read(entry.nodeid, open.fh, 0, absl::MakeSpan(buf)));
  ASSERT_EQ(n, contents.size());
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + n), contents);

  // ...and into separate page-sized guest buffers, as Linux's page cache
  // reads (out header in its own descriptor, one descriptor per page).
  std::vector<vhost::GuestBuffer> pages;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(uint64_t gpa, g.ram->Allocate(4096, 4096));
    pages.push_back({gpa, 4096});
  }
  ASSERT_OK_AND_ASSIGN(size_t m,
                       d.ReadToGuest(entry.nodeid, open.fh, 4096, pages));
  ASSERT_EQ(m, contents.size() - 4096);
  std::string got(m, '\0');
  ASSERT_OK(g.ram->memory().Read(pages[0].gpa, got.data(), 4096));
  ASSERT_OK(g.ram->memory().Read(pages[1].gpa, got.data() + 4096, m - 4096));
  EXPECT_EQ(got, contents.substr(4096));

  ASSERT_OK(d.Release(entry.nodeid, open.fh));
  absl::StatusOr<fuse_entry_out> missing = d.Lookup(FUSE_ROOT_ID, "nope");
  EXPECT_EQ(guest::FuseErrno(missing.status()), ENOENT) << missing.status();
  ASSERT_OK(d.Forget(entry.nodeid, 1));
  EXPECT_EQ(d.in_flight(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Peers, DataPathTest,
                         ::testing::Values(PeerKind::kCVirtiofsd,
                                           PeerKind::kVirtiofsd113),
                         PeerParamName);

}  // namespace
}  // namespace vhostmig::interop
