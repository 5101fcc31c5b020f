// Directory requests through the synthetic guest.
#include <dirent.h>
#include <sys/stat.h>

#include <set>

#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {
namespace {

using DirTest = FsDeviceTest;

std::set<std::string> Names(const std::vector<guest::DirEntry>& entries) {
  std::set<std::string> out;
  for (const auto& e : entries) out.insert(e.name);
  return out;
}

TEST_F(DirTest, ReaddirListsEveryEntry) {
  WriteHostFile("a", "");
  WriteHostFile("b", "");
  ASSERT_EQ(mkdir(HostPath("c").c_str(), 0755), 0);
  auto d = driver().Opendir(FUSE_ROOT_ID);
  ASSERT_TRUE(d.ok()) << d.status();
  auto entries = driver().Readdir(FUSE_ROOT_ID, d->fh, 0);
  ASSERT_TRUE(entries.ok()) << entries.status();
  EXPECT_EQ(Names(*entries), (std::set<std::string>{".", "..", "a", "b", "c"}));
  for (const auto& e : *entries) {
    if (e.name == "c") {
      EXPECT_EQ(e.type, DT_DIR);
    }
    if (e.name == "a") {
      EXPECT_EQ(e.type, DT_REG);
    }
  }
  ASSERT_TRUE(driver().Releasedir(FUSE_ROOT_ID, d->fh).ok());
}

TEST_F(DirTest, ReaddirWithASmallBufferResumesAtTheReturnedOffset) {
  std::set<std::string> expected = {".", ".."};
  for (int i = 0; i < 100; ++i) {
    const std::string name = "file_with_a_longish_name_" + std::to_string(i);
    WriteHostFile(name, "");
    expected.insert(name);
  }
  auto d = driver().Opendir(FUSE_ROOT_ID);
  ASSERT_TRUE(d.ok());
  std::vector<std::string> seen;
  uint64_t offset = 0;
  for (int round = 0; round < 1000; ++round) {
    auto entries = driver().Readdir(FUSE_ROOT_ID, d->fh, offset, 256);
    ASSERT_TRUE(entries.ok()) << entries.status();
    if (entries->empty()) break;
    for (const auto& e : *entries) seen.push_back(e.name);
    offset = entries->back().off;
  }
  EXPECT_EQ(seen.size(), expected.size());  // no duplicates
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), expected);
}

TEST_F(DirTest, ReaddirplusReturnsEntriesThatCountAsLookups) {
  WriteHostFile("a", "123");
  auto d = driver().Opendir(FUSE_ROOT_ID);
  ASSERT_TRUE(d.ok());
  auto entries = driver().Readdirplus(FUSE_ROOT_ID, d->fh, 0);
  ASSERT_TRUE(entries.ok()) << entries.status();
  uint64_t a_node = 0;
  for (const auto& e : *entries) {
    if (e.dirent.name == "a") {
      a_node = e.entry.nodeid;
      EXPECT_EQ(e.entry.attr.size, 3u);
    } else {
      // "." and ".." carry no entry.
      EXPECT_EQ(e.entry.nodeid, 0u) << e.dirent.name;
    }
  }
  ASSERT_NE(a_node, 0u);
  EXPECT_EQ(fs().inodes().Info(a_node)->lookups, 1u);
  EXPECT_EQ(MustLookup(FUSE_ROOT_ID, "a"), a_node);
}

TEST_F(DirTest, OpendirOfAFileFailsWithEnotdir) {
  WriteHostFile("f", "");
  EXPECT_EQ(guest::FuseErrno(
                driver().Opendir(MustLookup(FUSE_ROOT_ID, "f")).status()),
            ENOTDIR);
}

TEST_F(DirTest, ReleasedirInvalidatesTheHandle) {
  auto d = driver().Opendir(FUSE_ROOT_ID);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(driver().Fsyncdir(FUSE_ROOT_ID, d->fh).ok());
  ASSERT_TRUE(driver().Releasedir(FUSE_ROOT_ID, d->fh).ok());
  EXPECT_EQ(guest::FuseErrno(driver().Readdir(FUSE_ROOT_ID, d->fh, 0).status()),
            EBADF);
  EXPECT_EQ(guest::FuseErrno(driver().Releasedir(FUSE_ROOT_ID, d->fh)), EBADF);
}

TEST_F(DirTest, DirectoryHandleCannotBeReleasedAsAFile) {
  auto d = driver().Opendir(FUSE_ROOT_ID);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(guest::FuseErrno(driver().Release(FUSE_ROOT_ID, d->fh)), EBADF);
}

}  // namespace
}  // namespace vhostmig::fs
