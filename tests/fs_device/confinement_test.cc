// Confinement: the guest must not reach anything outside the shared
// directory, whatever names, symlinks or races it uses.
#include <sys/stat.h>

#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {
namespace {

using ConfinementTest = FsDeviceTest;

TEST_F(ConfinementTest, DotDotAtTheRootStaysAtTheRoot) {
  auto e = driver().Lookup(FUSE_ROOT_ID, "..");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->nodeid, FUSE_ROOT_ID);
  auto dot = driver().Lookup(FUSE_ROOT_ID, ".");
  ASSERT_TRUE(dot.ok());
  EXPECT_EQ(dot->nodeid, FUSE_ROOT_ID);
}

TEST_F(ConfinementTest, DotDotOfASubdirectoryIsItsKnownParent) {
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(HostPath("d/e").c_str(), 0755), 0);
  const uint64_t d = MustLookup(FUSE_ROOT_ID, "d");
  const uint64_t e = MustLookup(d, "e");
  EXPECT_EQ(MustLookup(e, ".."), d);
  EXPECT_EQ(MustLookup(d, ".."), FUSE_ROOT_ID);
}

TEST_F(ConfinementTest, DotDotOfADirectoryMovedOutsideTheShareIsRefused) {
  TempDir outside;
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  ASSERT_EQ(mkdir(HostPath("d/e").c_str(), 0755), 0);
  const uint64_t d = MustLookup(FUSE_ROOT_ID, "d");
  const uint64_t e = MustLookup(d, "e");
  ASSERT_TRUE(driver().Forget(d, 1).ok());
  // A host process moves the directory's parent out of the share.
  ASSERT_EQ(rename(HostPath("d").c_str(), (outside.path() + "/d").c_str()), 0);
  EXPECT_EQ(guest::FuseErrno(driver().Lookup(e, "..").status()), EACCES);
}

TEST_F(ConfinementTest, SymlinkToEtcIsNeverFollowed) {
  ASSERT_EQ(symlink("/etc", HostPath("etc").c_str()), 0);
  auto e = driver().Lookup(FUSE_ROOT_ID, "etc");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(S_ISLNK(e->attr.mode));
  EXPECT_EQ(guest::FuseErrno(driver().Lookup(e->nodeid, "passwd").status()),
            ENOTDIR);
  EXPECT_EQ(guest::FuseErrno(driver().Opendir(e->nodeid).status()), ENOTDIR);
  EXPECT_EQ(guest::FuseErrno(driver().Open(e->nodeid, O_RDONLY).status()),
            ELOOP);
  EXPECT_EQ(guest::FuseErrno(driver().Mkdir(e->nodeid, "x", 0755).status()),
            ENOTDIR);
  auto target = driver().Readlink(e->nodeid);
  ASSERT_TRUE(target.ok());
  EXPECT_EQ(*target, "/etc");
}

TEST_F(ConfinementTest, SymlinkToParentParentIsNeverFollowed) {
  ASSERT_EQ(symlink("../..", HostPath("up").c_str()), 0);
  auto e = driver().Lookup(FUSE_ROOT_ID, "up");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(S_ISLNK(e->attr.mode));
  EXPECT_EQ(guest::FuseErrno(driver().Lookup(e->nodeid, "..").status()),
            ENOTDIR);
  EXPECT_EQ(guest::FuseErrno(driver().Opendir(e->nodeid).status()), ENOTDIR);
}

TEST_F(ConfinementTest, CreateThroughADanglingSymlinkDoesNotCreateItsTarget) {
  TempDir outside;
  const std::string target = outside.path() + "/escaped";
  ASSERT_EQ(symlink(target.c_str(), HostPath("evil").c_str()), 0);
  auto c = driver().Create(FUSE_ROOT_ID, "evil", O_RDWR, 0644);
  EXPECT_FALSE(c.ok());
  struct stat st;
  EXPECT_NE(lstat(target.c_str(), &st), 0) << "created outside the share";
}

TEST_F(ConfinementTest, SetattrOfASymlinkToAnOutsideFileLeavesTheFileAlone) {
  TempDir outside;
  const std::string target = outside.path() + "/victim";
  { std::ofstream(target) << "precious"; }
  ASSERT_EQ(symlink(target.c_str(), HostPath("l").c_str()), 0);
  const uint64_t l = MustLookup(FUSE_ROOT_ID, "l");
  fuse_setattr_in in{};
  in.valid = FATTR_SIZE;
  in.size = 0;
  EXPECT_FALSE(driver().Setattr(l, in).ok());
  in.valid = FATTR_MODE;
  in.mode = 0777;
  driver().Setattr(l, in).IgnoreError();
  struct stat st;
  ASSERT_EQ(stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 8);
  EXPECT_NE(st.st_mode & 0777, 0777u);
}

TEST_F(ConfinementTest, LinkOfASymlinkLinksTheSymlinkItself) {
  TempDir outside;
  const std::string target = outside.path() + "/secret";
  { std::ofstream(target) << "s"; }
  ASSERT_EQ(symlink(target.c_str(), HostPath("l").c_str()), 0);
  const uint64_t l = MustLookup(FUSE_ROOT_ID, "l");
  auto e = driver().Link(l, FUSE_ROOT_ID, "l2");
  ASSERT_TRUE(e.ok()) << e.status();
  struct stat st;
  ASSERT_EQ(lstat(HostPath("l2").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
}

TEST_F(ConfinementTest, NamesWithSlashesCannotReachOutside) {
  for (const char* name : {"../etc", "/etc/passwd", "a/../../etc"}) {
    EXPECT_EQ(guest::FuseErrno(driver().Lookup(FUSE_ROOT_ID, name).status()),
              EINVAL)
        << name;
    EXPECT_EQ(guest::FuseErrno(
                  driver().Create(FUSE_ROOT_ID, name, O_RDWR, 0644).status()),
              EINVAL)
        << name;
  }
}

TEST_F(ConfinementTest, LookupAfterARacingRenameSeesTheNewNameOnly) {
  WriteHostFile("a", "content");
  const uint64_t a = MustLookup(FUSE_ROOT_ID, "a");
  // Renamed on the host, behind the guest's back.
  ASSERT_EQ(rename(HostPath("a").c_str(), HostPath("b").c_str()), 0);
  EXPECT_EQ(guest::FuseErrno(driver().Lookup(FUSE_ROOT_ID, "a").status()),
            ENOENT);
  EXPECT_EQ(MustLookup(FUSE_ROOT_ID, "b"), a);
  // The node still reaches the same file.
  auto o = driver().Open(a, O_RDONLY);
  ASSERT_TRUE(o.ok()) << o.status();
  std::vector<uint8_t> buf(16);
  auto n = driver().Read(a, o->fh, 0, absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf.begin(), buf.begin() + *n), "content");
}

TEST_F(ConfinementTest, NameReplacedByASymlinkAfterLookupIsNotFollowed) {
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  const uint64_t d = MustLookup(FUSE_ROOT_ID, "d");
  // The directory is swapped for a symlink to /etc; the node keeps naming
  // the original directory, and the new name is a symlink node.
  ASSERT_EQ(rename(HostPath("d").c_str(), HostPath("old").c_str()), 0);
  ASSERT_EQ(symlink("/etc", HostPath("d").c_str()), 0);
  EXPECT_EQ(guest::FuseErrno(driver().Lookup(d, "passwd").status()), ENOENT);
  auto e = driver().Lookup(FUSE_ROOT_ID, "d");
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(S_ISLNK(e->attr.mode));
}

}  // namespace
}  // namespace vhostmig::fs
