// Attribute requests through the synthetic guest: GETATTR, SETATTR,
// ACCESS, STATFS and the xattr family.
#include <sys/stat.h>
#include <sys/xattr.h>

#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {
namespace {

using AttrTest = FsDeviceTest;

TEST_F(AttrTest, GetattrOfTheRootDescribesTheSharedDirectory) {
  auto a = driver().Getattr(FUSE_ROOT_ID);
  ASSERT_TRUE(a.ok()) << a.status();
  struct stat st;
  ASSERT_EQ(stat(dir_.path().c_str(), &st), 0);
  EXPECT_EQ(a->attr.ino, st.st_ino);
  EXPECT_TRUE(S_ISDIR(a->attr.mode));
}

TEST_F(AttrTest, GetattrOfAnUnknownNodeFailsWithEnoent) {
  EXPECT_EQ(guest::FuseErrno(driver().Getattr(77777).status()), ENOENT);
}

TEST_F(AttrTest, GetattrThroughAFileHandleSeesTheOpenFile) {
  WriteHostFile("f", "abc");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto o = driver().Open(f, O_RDONLY);
  ASSERT_TRUE(o.ok()) << o.status();
  auto a = driver().Getattr(f, o->fh);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->attr.size, 3u);
}

TEST_F(AttrTest, SetattrChangesSizeModeAndTimes) {
  WriteHostFile("f", "0123456789");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  fuse_setattr_in in{};
  in.valid = FATTR_SIZE | FATTR_MODE | FATTR_MTIME | FATTR_ATIME;
  in.size = 4;
  in.mode = 0600;
  in.mtime = 1000000;
  in.atime = 2000000;
  auto a = driver().Setattr(f, in);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->attr.size, 4u);
  struct stat st;
  ASSERT_EQ(stat(HostPath("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_mtime, 1000000);
  EXPECT_EQ(st.st_atime, 2000000);
}

TEST_F(AttrTest, SetattrChangesOwner) {
  WriteHostFile("f", "");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  fuse_setattr_in in{};
  in.valid = FATTR_UID | FATTR_GID;
  in.uid = 4321;
  in.gid = 8765;
  ASSERT_TRUE(driver().Setattr(f, in).ok());
  struct stat st;
  ASSERT_EQ(stat(HostPath("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 4321u);
  EXPECT_EQ(st.st_gid, 8765u);
}

TEST_F(AttrTest, SetattrTruncateOfADirectoryFails) {
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  const uint64_t d = MustLookup(FUSE_ROOT_ID, "d");
  fuse_setattr_in in{};
  in.valid = FATTR_SIZE;
  EXPECT_NE(guest::FuseErrno(driver().Setattr(d, in).status()), 0);
}

TEST_F(AttrTest, AccessChecksAsTheRequester) {
  WriteHostFile("f", "");
  ASSERT_EQ(chmod(HostPath("f").c_str(), 0644), 0);
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  EXPECT_TRUE(driver().Access(f, R_OK | W_OK).ok());
  // Root may not execute a file without any x bit.
  EXPECT_EQ(guest::FuseErrno(driver().Access(f, X_OK)), EACCES);
}

TEST_F(AttrTest, StatfsReportsTheHostFileSystem) {
  auto s = driver().Statfs(FUSE_ROOT_ID);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_GT(s->st.blocks, 0u);
  EXPECT_GT(s->st.bsize, 0u);
  EXPECT_EQ(s->st.namelen, 255u);
}

TEST_F(AttrTest, XattrsRoundTrip) {
  WriteHostFile("f", "");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  ASSERT_TRUE(driver().Setxattr(f, "user.color", "blue").ok());
  char buf[16] = {};
  ASSERT_EQ(getxattr(HostPath("f").c_str(), "user.color", buf, sizeof(buf)), 4);
  auto size = driver().Getxattr(f, "user.color", 0);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size->size, 4u);
  auto value = driver().Getxattr(f, "user.color", 64);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(value->value, "blue");
  auto list = driver().Listxattr(f, 256);
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_NE(list->value.find("user.color"), std::string::npos);
  ASSERT_TRUE(driver().Removexattr(f, "user.color").ok());
  EXPECT_EQ(guest::FuseErrno(driver().Getxattr(f, "user.color", 64).status()),
            ENODATA);
}

TEST_F(AttrTest, GetxattrIntoATooSmallBufferFailsWithErange) {
  WriteHostFile("f", "");
  ASSERT_EQ(setxattr(HostPath("f").c_str(), "user.long", "0123456789", 10, 0),
            0);
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  EXPECT_EQ(guest::FuseErrno(driver().Getxattr(f, "user.long", 4).status()),
            ERANGE);
}

class XattrDisabledTest : public FsDeviceTest {
 protected:
  FsConfig Config() override { return FsConfig{}; }
};

TEST_F(XattrDisabledTest, XattrRequestsFailWithEnosys) {
  EXPECT_EQ(
      guest::FuseErrno(driver().Getxattr(FUSE_ROOT_ID, "user.x", 10).status()),
      ENOSYS);
  EXPECT_EQ(guest::FuseErrno(driver().Setxattr(FUSE_ROOT_ID, "user.x", "v")),
            ENOSYS);
}

}  // namespace
}  // namespace vhostmig::fs
