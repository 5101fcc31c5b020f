// Entry requests through the synthetic guest: lookup, create, link, remove,
// rename, and the lookup-count lifecycle of the inode table.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "tests/fs_device/fs_test_fixture.h"

namespace vhostmig::fs {
namespace {

using EntryTest = FsDeviceTest;

TEST_F(EntryTest, LookupOfExistingFileReturnsItsAttributes) {
  WriteHostFile("hello", "12345");
  auto e = driver().Lookup(FUSE_ROOT_ID, "hello");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_GT(e->nodeid, FUSE_ROOT_ID);
  EXPECT_EQ(e->attr.size, 5u);
  EXPECT_TRUE(S_ISREG(e->attr.mode));
  struct stat st;
  ASSERT_EQ(stat(HostPath("hello").c_str(), &st), 0);
  EXPECT_EQ(e->attr.ino, st.st_ino);
  EXPECT_EQ(e->entry_valid, 1u);  // --cache=auto
}

TEST_F(EntryTest, LookupOfMissingNameFailsWithEnoent) {
  auto e = driver().Lookup(FUSE_ROOT_ID, "missing");
  EXPECT_EQ(guest::FuseErrno(e.status()), ENOENT);
}

TEST_F(EntryTest, LookupUnderUnknownNodeFailsWithEnoent) {
  auto e = driver().Lookup(999999, "x");
  EXPECT_EQ(guest::FuseErrno(e.status()), ENOENT);
}

TEST_F(EntryTest, LookupUnderAFileFailsWithEnotdir) {
  WriteHostFile("f", "");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  EXPECT_EQ(guest::FuseErrno(driver().Lookup(f, "x").status()), ENOTDIR);
}

TEST_F(EntryTest, RepeatedLookupsShareOneNodeAndCountReferences) {
  WriteHostFile("a", "");
  const uint64_t first = MustLookup(FUSE_ROOT_ID, "a");
  const uint64_t second = MustLookup(FUSE_ROOT_ID, "a");
  EXPECT_EQ(first, second);
  auto info = fs().inodes().Info(first);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->lookups, 2u);
  EXPECT_EQ(info->location.parent, FUSE_ROOT_ID);
  EXPECT_EQ(info->location.name, "a");
}

TEST_F(EntryTest, HardLinksLookUpToTheSameNode) {
  WriteHostFile("orig", "x");
  ASSERT_EQ(link(HostPath("orig").c_str(), HostPath("alias").c_str()), 0);
  EXPECT_EQ(MustLookup(FUSE_ROOT_ID, "orig"),
            MustLookup(FUSE_ROOT_ID, "alias"));
}

TEST_F(EntryTest, ForgetDropsTheEntryWhenItsCountReachesZero) {
  WriteHostFile("a", "");
  const uint64_t node = MustLookup(FUSE_ROOT_ID, "a");
  MustLookup(FUSE_ROOT_ID, "a");
  ASSERT_TRUE(driver().Forget(node, 1).ok());
  EXPECT_TRUE(fs().inodes().Info(node).has_value());
  ASSERT_TRUE(driver().Forget(node, 1).ok());
  EXPECT_FALSE(fs().inodes().Info(node).has_value());
  // The id is not reused: a new lookup gets a new node.
  EXPECT_NE(MustLookup(FUSE_ROOT_ID, "a"), node);
}

TEST_F(EntryTest, BatchForgetDropsEveryListedReference) {
  WriteHostFile("a", "");
  WriteHostFile("b", "");
  const uint64_t a = MustLookup(FUSE_ROOT_ID, "a");
  const uint64_t b = MustLookup(FUSE_ROOT_ID, "b");
  ASSERT_TRUE(driver().BatchForget({{a, 1}, {b, 1}}).ok());
  EXPECT_FALSE(fs().inodes().Info(a).has_value());
  EXPECT_FALSE(fs().inodes().Info(b).has_value());
}

TEST_F(EntryTest, ForgetOfTheRootIsIgnored) {
  ASSERT_TRUE(driver().Forget(FUSE_ROOT_ID, 100).ok());
  EXPECT_TRUE(driver().Getattr(FUSE_ROOT_ID).ok());
}

TEST_F(EntryTest, AnOpenHandleKeepsAForgottenNodeAlive) {
  WriteHostFile("a", "data");
  const uint64_t node = MustLookup(FUSE_ROOT_ID, "a");
  auto open = driver().Open(node, O_RDONLY);
  ASSERT_TRUE(open.ok()) << open.status();
  ASSERT_TRUE(driver().Forget(node, 1).ok());
  auto info = fs().inodes().Info(node);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->lookups, 0u);
  EXPECT_EQ(info->opens, 1u);
  std::vector<uint8_t> buf(16);
  auto n = driver().Read(node, open->fh, 0, absl::MakeSpan(buf));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 4u);
  ASSERT_TRUE(driver().Release(node, open->fh).ok());
  EXPECT_FALSE(fs().inodes().Info(node).has_value());
}

TEST_F(EntryTest, MkdirCreatesADirectoryWithTheGivenMode) {
  auto e = driver().Mkdir(FUSE_ROOT_ID, "d", 0750);
  ASSERT_TRUE(e.ok()) << e.status();
  struct stat st;
  ASSERT_EQ(stat(HostPath("d").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(e->attr.ino, st.st_ino);
  EXPECT_EQ(guest::FuseErrno(driver().Mkdir(FUSE_ROOT_ID, "d", 0750).status()),
            EEXIST);
}

// Linux's FUSE_CREATE carries the file type in the mode (S_IFREG | perms);
// openat2 refuses such a mode unless the daemon strips the type.
TEST_F(EntryTest, CreateAcceptsTheFileTypeInTheModeAsLinuxSendsIt) {
  auto c = driver().Create(FUSE_ROOT_ID, "typed", O_WRONLY | O_CREAT,
                           S_IFREG | 0640, 022);
  ASSERT_TRUE(c.ok()) << c.status();
  struct stat st {};
  ASSERT_EQ(stat(HostPath("typed").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST_F(EntryTest, MknodCreatesAFifo) {
  auto e = driver().Mknod(FUSE_ROOT_ID, "fifo", S_IFIFO | 0600, 0);
  ASSERT_TRUE(e.ok()) << e.status();
  struct stat st;
  ASSERT_EQ(lstat(HostPath("fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST_F(EntryTest, SymlinkStoresTheTargetVerbatimAndReadlinkReturnsIt) {
  auto e = driver().Symlink(FUSE_ROOT_ID, "link", "../../outside/target");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE(S_ISLNK(e->attr.mode));
  char buf[256] = {};
  ASSERT_GT(readlink(HostPath("link").c_str(), buf, sizeof(buf)), 0);
  EXPECT_STREQ(buf, "../../outside/target");
  auto target = driver().Readlink(e->nodeid);
  ASSERT_TRUE(target.ok()) << target.status();
  EXPECT_EQ(*target, "../../outside/target");
}

TEST_F(EntryTest, ReadlinkOfARegularFileFailsWithEinval) {
  WriteHostFile("f", "");
  EXPECT_EQ(guest::FuseErrno(
                driver().Readlink(MustLookup(FUSE_ROOT_ID, "f")).status()),
            EINVAL);
}

TEST_F(EntryTest, LinkCreatesAHardLinkToTheSameNode) {
  WriteHostFile("f", "abc");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  auto e = driver().Link(f, FUSE_ROOT_ID, "g");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->nodeid, f);
  EXPECT_EQ(e->attr.nlink, 2u);
  EXPECT_EQ(ReadHostFile("g"), "abc");
}

TEST_F(EntryTest, LinkOfADirectoryFailsWithEperm) {
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  const uint64_t d = MustLookup(FUSE_ROOT_ID, "d");
  EXPECT_EQ(guest::FuseErrno(driver().Link(d, FUSE_ROOT_ID, "e").status()),
            EPERM);
}

TEST_F(EntryTest, UnlinkRemovesTheFileAndClearsItsLocation) {
  WriteHostFile("f", "");
  const uint64_t f = MustLookup(FUSE_ROOT_ID, "f");
  ASSERT_TRUE(driver().Unlink(FUSE_ROOT_ID, "f").ok());
  EXPECT_FALSE(HostExists("f"));
  auto info = fs().inodes().Info(f);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->location.parent, 0u);
  EXPECT_EQ(guest::FuseErrno(driver().Unlink(FUSE_ROOT_ID, "f")), ENOENT);
}

TEST_F(EntryTest, RmdirRemovesAnEmptyDirectoryOnly) {
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  WriteHostFile("d/f", "");
  EXPECT_EQ(guest::FuseErrno(driver().Rmdir(FUSE_ROOT_ID, "d")), ENOTEMPTY);
  ASSERT_EQ(unlink(HostPath("d/f").c_str()), 0);
  ASSERT_TRUE(driver().Rmdir(FUSE_ROOT_ID, "d").ok());
  EXPECT_FALSE(HostExists("d"));
}

TEST_F(EntryTest, RenameMovesTheFileAndKeepsItsNode) {
  WriteHostFile("a", "x");
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  const uint64_t a = MustLookup(FUSE_ROOT_ID, "a");
  const uint64_t d = MustLookup(FUSE_ROOT_ID, "d");
  ASSERT_TRUE(driver().Rename(FUSE_ROOT_ID, "a", d, "b").ok());
  EXPECT_FALSE(HostExists("a"));
  EXPECT_EQ(ReadHostFile("d/b"), "x");
  EXPECT_EQ(MustLookup(d, "b"), a);
  auto info = fs().inodes().Info(a);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->location.parent, d);
  EXPECT_EQ(info->location.name, "b");
}

TEST_F(EntryTest, Rename2NoReplaceRefusesAnExistingTarget) {
  WriteHostFile("a", "a");
  WriteHostFile("b", "b");
  EXPECT_EQ(guest::FuseErrno(driver().Rename2(FUSE_ROOT_ID, "a", FUSE_ROOT_ID,
                                              "b", RENAME_NOREPLACE)),
            EEXIST);
  EXPECT_EQ(ReadHostFile("b"), "b");
}

TEST_F(EntryTest, Rename2ExchangeSwapsBothNamesAndLocations) {
  WriteHostFile("a", "a");
  WriteHostFile("b", "b");
  const uint64_t a = MustLookup(FUSE_ROOT_ID, "a");
  const uint64_t b = MustLookup(FUSE_ROOT_ID, "b");
  ASSERT_TRUE(
      driver()
          .Rename2(FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "b", RENAME_EXCHANGE)
          .ok());
  EXPECT_EQ(ReadHostFile("a"), "b");
  EXPECT_EQ(ReadHostFile("b"), "a");
  EXPECT_EQ(fs().inodes().Info(a)->location.name, "b");
  EXPECT_EQ(fs().inodes().Info(b)->location.name, "a");
}

TEST_F(EntryTest, Rename2WithUnknownFlagsFailsWithEinval) {
  WriteHostFile("a", "a");
  EXPECT_EQ(guest::FuseErrno(
                driver().Rename2(FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "b", 0x80)),
            EINVAL);
  EXPECT_TRUE(HostExists("a"));
}

TEST_F(EntryTest, CreateMakesTheFileAndReturnsAnOpenHandle) {
  auto c = driver().Create(FUSE_ROOT_ID, "new", O_RDWR, 0640);
  ASSERT_TRUE(c.ok()) << c.status();
  struct stat st;
  ASSERT_EQ(stat(HostPath("new").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(c->entry.attr.ino, st.st_ino);
  auto n = driver().Write(c->entry.nodeid, c->open.fh, 0, Bytes("hi"));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  ASSERT_TRUE(driver().Release(c->entry.nodeid, c->open.fh).ok());
  EXPECT_EQ(ReadHostFile("new"), "hi");
}

TEST_F(EntryTest, CreateWithExclOfAnExistingNameFailsWithEexist) {
  WriteHostFile("f", "");
  EXPECT_EQ(guest::FuseErrno(
                driver()
                    .Create(FUSE_ROOT_ID, "f", O_RDWR | O_CREAT | O_EXCL, 0600)
                    .status()),
            EEXIST);
}

TEST_F(EntryTest, CreateRunsAsTheRequestingUser) {
  guest::LoopbackFsOptions options = LoopbackOptions();
  options.driver.uid = 1234;
  options.driver.gid = 5678;
  ASSERT_EQ(chmod(dir_.path().c_str(), 0777), 0);
  auto other = guest::LoopbackFs::Create(device_.get(), options);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE((*other)->driver().Init().ok());
  auto c = (*other)->driver().Create(FUSE_ROOT_ID, "owned", O_RDWR, 0600);
  ASSERT_TRUE(c.ok()) << c.status();
  struct stat st;
  ASSERT_EQ(stat(HostPath("owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
}

TEST_F(EntryTest, CreateWithoutExclOfAnExistingFileOpensAndTruncatesIt) {
  WriteHostFile("f", "old contents");
  const uint64_t node = MustLookup(FUSE_ROOT_ID, "f");
  auto c = driver().Create(FUSE_ROOT_ID, "f", O_RDWR | O_CREAT | O_TRUNC,
                           S_IFREG | 0600);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->entry.nodeid, node);
  EXPECT_EQ(c->entry.attr.size, 0u);  // the attributes after O_TRUNC
  EXPECT_EQ(ReadHostFile("f"), "");
  auto n = driver().Write(c->entry.nodeid, c->open.fh, 0, Bytes("new"));
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_TRUE(driver().Release(c->entry.nodeid, c->open.fh).ok());
  EXPECT_EQ(ReadHostFile("f"), "new");
  EXPECT_EQ(fs().inodes().Info(node)->lookups, 2u);
}

TEST_F(EntryTest, CreateOfAnExistingDirectoryFailsWithEisdir) {
  ASSERT_EQ(mkdir(HostPath("d").c_str(), 0755), 0);
  EXPECT_EQ(guest::FuseErrno(
                driver().Create(FUSE_ROOT_ID, "d", O_RDWR, 0644).status()),
            EISDIR);
  EXPECT_EQ(fs().inodes().size(), 1u);  // no reference left behind
}

// CREATE never opens a special file that already has the name: opening a
// device node or FIFO acts on the host, whatever the guest then does.
TEST_F(EntryTest, CreateWithoutExclDoesNotOpenAnExistingFifo) {
  ASSERT_EQ(mkfifo(HostPath("fifo").c_str(), 0666), 0);
  EXPECT_EQ(guest::FuseErrno(
                driver().Create(FUSE_ROOT_ID, "fifo", O_RDWR, 0644).status()),
            ENXIO);
  EXPECT_EQ(fs().handles().size(), 0u);
  EXPECT_EQ(fs().inodes().size(), 1u);
}

TEST_F(EntryTest, CreateWithoutExclDoesNotOpenADeviceNodeTheGuestMade) {
  // The guest (as root) makes a node for the host's /dev/null, then sends
  // CREATE without O_EXCL for it.
  auto made =
      driver().Mknod(FUSE_ROOT_ID, "dev", S_IFCHR | 0666, makedev(1, 3));
  if (!made.ok() && guest::FuseErrno(made.status()) == EPERM) {
    GTEST_SKIP() << "mknod of a character device needs CAP_MKNOD";
  }
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(guest::FuseErrno(
                driver().Create(FUSE_ROOT_ID, "dev", O_RDWR, 0644).status()),
            ENXIO);
  EXPECT_EQ(fs().handles().size(), 0u);
}

// The O_PATH fd the inode table keeps for a created file is re-opened from
// the created fd, not by name: a file renamed onto the name in between is
// not what the table gets. Both ways the daemon has of doing that.
TEST_F(EntryTest, ReopenAsPathKeepsTheFileEvenWhenTheNameWasReplaced) {
  using Reopen = int (*)(int, UniqueFd*);
  for (Reopen reopen : {static_cast<Reopen>(&ReopenAsPath),
                        static_cast<Reopen>(&internal::ReopenAsPathViaProc)}) {
    const std::string name = HostPath("created");
    UniqueFd created(
        open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    ASSERT_TRUE(created.valid()) << std::strerror(errno);
    WriteHostFile("other", "x");
    ASSERT_EQ(rename(HostPath("other").c_str(), name.c_str()), 0);
    UniqueFd path;
    ASSERT_EQ(reopen(created.get(), &path), 0);
    EXPECT_EQ(fcntl(path.get(), F_GETFL) & O_PATH, O_PATH);
    EXPECT_EQ(fcntl(path.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    struct stat want {};
    struct stat got {};
    struct stat now_named {};
    ASSERT_EQ(fstat(created.get(), &want), 0);
    ASSERT_EQ(fstat(path.get(), &got), 0);
    ASSERT_EQ(stat(name.c_str(), &now_named), 0);
    EXPECT_EQ(got.st_ino, want.st_ino);
    EXPECT_EQ(got.st_dev, want.st_dev);
    EXPECT_NE(got.st_ino, now_named.st_ino);
    ASSERT_EQ(unlink(name.c_str()), 0);
  }
}

// CREATE while a host process keeps renaming other files onto the name:
// whichever file the guest ends up with, the node it gets and the handle it
// gets are the same file, and that is the file the reply describes.
TEST_F(EntryTest, CreateEntersTheFileItOpenedWhileNamesAreRenamedOntoIt) {
  std::atomic<bool> stop{false};
  std::thread renamer([&] {
    const std::string decoy = HostPath("decoy");
    const std::string target = HostPath("target");
    while (!stop.load(std::memory_order_relaxed)) {
      const int fd = open(decoy.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) close(fd);
      rename(decoy.c_str(), target.c_str());
    }
  });
  int created = 0;
  for (int i = 0; i < 400; ++i) {
    // Half exclusive (may find a decoy there: EEXIST), half not.
    const uint32_t flags = (i % 2) ? O_RDWR | O_CREAT | O_EXCL : O_RDWR;
    if (i % 2) unlink(HostPath("target").c_str());
    auto c = driver().Create(FUSE_ROOT_ID, "target", flags, S_IFREG | 0644);
    if (!c.ok()) {
      ASSERT_EQ(guest::FuseErrno(c.status()), EEXIST) << c.status();
      continue;
    }
    ++created;
    auto inode = fs().inodes().Get(c->entry.nodeid);
    auto file = fs().handles().Get(c->open.fh);
    ASSERT_TRUE(inode && file);
    struct stat node_st {};
    struct stat file_st {};
    ASSERT_EQ(fstat(inode->path_fd.get(), &node_st), 0);
    ASSERT_EQ(fstat(file->fd.get(), &file_st), 0);
    EXPECT_EQ(node_st.st_ino, file_st.st_ino);
    EXPECT_EQ(node_st.st_dev, file_st.st_dev);
    EXPECT_EQ(c->entry.attr.ino, file_st.st_ino);
    EXPECT_EQ(inode->identity.ino, file_st.st_ino);
    ASSERT_TRUE(driver().Release(c->entry.nodeid, c->open.fh).ok());
    ASSERT_TRUE(driver().Forget(c->entry.nodeid, 1).ok());
  }
  stop = true;
  renamer.join();
  EXPECT_GT(created, 0);
}

}  // namespace
}  // namespace vhostmig::fs
